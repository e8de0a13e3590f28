"""Encoders: embeddings as sentence-transformers computes them, classification scores, grouped
entities; all batched, and a text's result does not depend on its batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from engine import Engine
from engine.encoders import (
    ClassificationEngine,
    EmbeddingEngine,
    Pooling,
    TokenClassificationEngine,
    group_entities,
)
from engine.errors import UnsafeModel
from tests.engine.conftest import MINILM_DIR
from tests.modelfactory import _copy_tokenizer, tiny_bert_dir

TEXTS = ["A man is eating food.", "Someone is eating a piece of bread.", "The new movie is awesome",
         "A cheetah chases prey across a field, running faster than any other land animal on earth."]


def reference_embeddings(texts: list[str]) -> torch.Tensor:
    """sentence-transformers' math for all-MiniLM-L6-v2: mean of token states over the attention
    mask (max_seq_length 256), then L2 normalisation; one text at a time, no padding."""
    tok = AutoTokenizer.from_pretrained(MINILM_DIR)
    model = AutoModel.from_pretrained(MINILM_DIR).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tok([text], truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)[0])
    return torch.stack(out)


def test_it_reads_pooling_and_normalisation_from_the_sentence_transformers_files() -> None:
    pooling = Pooling.from_folder(MINILM_DIR)
    assert (pooling.mode, pooling.normalize, pooling.max_seq_length) == ("mean_tokens", True, 256)


def test_batched_embeddings_match_sentence_transformers_within_1e_5_cosine() -> None:
    engine = Engine.from_pretrained(MINILM_DIR)
    assert isinstance(engine, EmbeddingEngine)
    result = engine.embed(TEXTS)
    ref = reference_embeddings(TEXTS)
    cos = torch.nn.functional.cosine_similarity(result.vectors, ref, dim=-1)
    assert (cos > 1 - 1e-5).all(), cos
    assert result.vectors.norm(dim=-1).sub(1).abs().max() < 1e-5
    assert result.prompt_tokens > len(TEXTS)
    alone = engine.embed([TEXTS[2]]).vectors[0]
    assert torch.nn.functional.cosine_similarity(alone, result.vectors[2], dim=0) > 1 - 1e-6
    # and the meaning is there: the two eating sentences are closest
    sims = result.vectors @ result.vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[0, 3]


def test_sequence_classification_returns_labels_with_softmax_scores(tmp_path: Path) -> None:
    folder = tiny_bert_dir(tmp_path / "bert", num_labels=3)
    engine = Engine.from_pretrained(folder)
    assert isinstance(engine, ClassificationEngine)
    results = engine.classify(TEXTS)
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        ref = hf(**tok([TEXTS[3]], return_tensors="pt")).logits.softmax(-1)[0]
    best = results[3][0]
    assert best.label == f"LABEL_{int(ref.argmax())}" and best.score == pytest.approx(float(ref.max()), abs=1e-5)
    assert all(len(r) == 3 and sum(x.score for x in r) == pytest.approx(1.0) for r in results)
    assert [len(r) for r in engine.classify(TEXTS, top_k=1)] == [1] * len(TEXTS)


def test_token_classification_groups_entities_over_word_pieces(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForTokenClassification

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, id2label=dict(enumerate(labels)),
                        label2id={x: i for i, x in enumerate(labels)})
    folder = tmp_path / "ner"
    BertForTokenClassification(config).save_pretrained(folder)
    _copy_tokenizer(folder, chat_template=False)
    engine = Engine.from_pretrained(folder)
    assert isinstance(engine, TokenClassificationEngine)
    texts = ["Alice moved from Paris to Berlin", "nothing here"]
    for text, ents in zip(texts, engine.entities(texts), strict=True):
        for e in ents:
            assert e.entity_group in ("PER", "LOC") and 0 < e.score <= 1
            assert text[e.start:e.end] == e.word and e.word.strip() == e.word


def test_entity_grouping_follows_bio_labels() -> None:
    text = "Angela Merkel visited Washington"
    offsets = [(0, 0), (0, 6), (7, 10), (10, 13), (14, 21), (22, 32), (0, 0)]  # "Mer" + "##kel" glued
    labels = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    scores = [1.0, 0.9, 0.8, 0.7, 0.99, 0.6, 1.0]
    ents = group_entities(text, labels, scores, offsets)
    assert [(e.entity_group, e.word) for e in ents] == [("PER", "Angela Merkel"), ("LOC", "Washington")]
    assert ents[0].score == pytest.approx((0.9 + 0.8 + 0.7) / 3)


def test_it_refuses_pickle_checkpoints_and_remote_code(tmp_path: Path) -> None:
    folder = tiny_bert_dir(tmp_path / "bert")
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(UnsafeModel, match="pickle"):
        Engine.from_pretrained(folder)
    (folder / "pytorch_model.bin").unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeModel, match="auto_map"):
        Engine.from_pretrained(folder)

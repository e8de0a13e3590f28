"""engine.finetune on tiny random models: answer-only loss masking, loss going down, same seed → same
weights, LoRA merged into a child whose logits equal base+adapter, and resuming from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from engine.finetune import (
    IGNORE,
    FinetuneConfig,
    _encode_sft,
    _encode_words,
    finetune,
    missing_labels,
    sft_loss,
    split,
)
from tests.engine.conftest import build_tiny_llama
from tests.modelfactory import tiny_bert_dir

QA = [{"prompt": f"What is {a} plus {b}?", "answer": f"{a + b}"} for a in range(4) for b in range(4)]
SENTIMENT = ([{"text": f"great lovely wonderful film {i}", "label": "pos"} for i in range(12)]
             + [{"text": f"awful boring terrible film {i}", "label": "neg"} for i in range(12)])


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("ft") / "llama")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory.mktemp("ft") / "bert")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_it_counts_only_the_answer_tokens_after_the_chat_template(llama: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(llama))
    ids, labels = _encode_sft(tok, {"prompt": "hello there", "answer": "general kenobi"}, 256, 102)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hello there"}], add_generation_prompt=True,
                                     tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] == tok("general kenobi", add_special_tokens=False)["input_ids"] + [102]

    logits = torch.randn(1, len(ids), 50)
    changed = logits.clone()
    changed[0, : n_prompt - 1] += 100 * torch.randn(n_prompt - 1, 50)  # positions predicting prompt tokens
    target = torch.tensor([labels])
    small = torch.where(target == IGNORE, target, target % 50)  # the same mask, ids inside 50 logits
    assert torch.allclose(sft_loss(logits, small), sft_loss(changed, small))


def test_it_splits_with_a_seed_and_names_labels_the_training_rows_never_show() -> None:
    train, held = split(SENTIMENT, 0.25, seed=3)
    assert (len(train), len(held)) == (18, 6) and split(SENTIMENT, 0.25, seed=3) == (train, held)
    assert missing_labels([{"label": "pos"}], [{"label": "neg"}, {"label": "pos"}]) == ["neg"]
    with pytest.raises(ValueError, match="method"):
        FinetuneConfig(task="text-generation", method="qlora")


def test_it_lowers_the_answer_loss_and_merges_lora_into_a_child_with_the_same_logits(llama: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="text-generation", method="lora", epochs=6, batch_size=4, learning_rate=5e-2,
                            warmup_steps=2, seed=1, eval_fraction=0.25, lora_r=4,
                            target_modules="all-linear")
    steps: list[tuple[int, int, float]] = []
    result = finetune(llama, tmp_path / "child", QA, config, on_step=lambda s, t, loss, lr: steps.append((s, t, loss)))
    assert result.steps == len(steps) == steps[-1][1] == 18
    assert result.losses[-1][1] < 0.8 * result.losses[0][1]
    assert result.merge_max_abs_diff is not None and result.merge_max_abs_diff < 1e-4
    assert not any("lora" in name for name in _weights(tmp_path / "child"))

    # base + adapter (peft, unmerged, as saved) against the merged child reloaded from disk
    from peft import PeftModel

    finetune(llama, tmp_path / "child2", QA, FinetuneConfig(task="text-generation", max_steps=3, batch_size=4,
             learning_rate=5e-3, seed=1, lora_r=4), adapter_dir=tmp_path / "adapter")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "child2"))
    child = AutoModelForCausalLM.from_pretrained(str(tmp_path / "child2")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    ids = torch.tensor([tok("What is 2 plus 3?")["input_ids"]])
    with torch.no_grad():
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()(ids).logits
        merged = child(ids).logits
    assert (merged - plain).abs().max() > 1e-3  # it did change the model
    assert (merged - adapted).abs().max() < 1e-4


def test_it_gives_the_same_weights_for_the_same_seed_and_data(llama: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="text-generation", method="full", max_steps=3, batch_size=4, learning_rate=1e-3, seed=7)
    finetune(llama, tmp_path / "a", QA, config)
    finetune(llama, tmp_path / "b", QA, config)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], _weights(llama)["model.layers.0.mlp.up_proj.weight"])


def test_it_resumes_from_the_last_checkpoint_to_the_same_weights(llama: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="text-generation", method="lora", max_steps=4, batch_size=4, learning_rate=5e-3,
                            seed=2, checkpoint_every=1, keep_checkpoints=2)
    whole = finetune(llama, tmp_path / "whole", QA, config)

    class Killed(Exception):
        pass

    def die_after_two(step: int, total: int, loss: float, lr: float) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        finetune(llama, tmp_path / "resumed", QA, config, checkpoint_dir=tmp_path / "ckpt", on_step=die_after_two)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-1.pt", "step-2.pt"]
    result = finetune(llama, tmp_path / "resumed", QA, config, checkpoint_dir=tmp_path / "ckpt")
    assert result.resumed_from == 2 and result.steps == 4
    assert [s for s, _ in result.losses] == [1, 2, 3, 4]  # the whole series, the steps before the kill too
    assert [v for _, v in result.losses] == pytest.approx([v for _, v in whole.losses], abs=1e-5)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_it_trains_a_new_classification_head_with_the_labels_of_the_data(bert: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="text-classification", method="full", epochs=6, batch_size=6, learning_rate=1e-2,
                            seed=0, eval_fraction=0.25)
    result = finetune(bert, tmp_path / "clf", SENTIMENT, config)
    assert result.labels == ["neg", "pos"]
    assert result.losses[-1][1] < 0.5 * result.losses[0][1]
    assert result.eval_accuracy == 1.0 and result.eval_loss is not None and result.eval_loss < 0.3
    child = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "clf"))
    assert child.config.id2label == {0: "neg", 1: "pos"}
    with pytest.raises(ValueError, match="never shows: neg"):
        finetune(bert, tmp_path / "x", SENTIMENT[:12], config, eval_rows=SENTIMENT[12:13])


def test_it_trains_a_classifier_with_lora_and_keeps_the_new_head_in_the_merged_child(bert: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="text-classification", method="lora", epochs=4, batch_size=6, learning_rate=2e-2,
                            seed=0, eval_fraction=0.25, target_modules="all-linear")
    result = finetune(bert, tmp_path / "clf", SENTIMENT, config)
    assert result.merge_max_abs_diff is not None and result.merge_max_abs_diff < 1e-4
    assert result.losses[-1][1] < result.losses[0][1]
    child = _weights(tmp_path / "clf")
    assert "classifier.weight" in child and not any("lora" in name for name in child)


@pytest.mark.slow
def test_lora_sft_of_smollm2_lowers_the_held_out_loss_and_merges_exactly(smollm2_dir: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"Reply with the code word for team {name}.", "answer": f"The code word is {word}."}
            for name, word in zip("red blue green black white pink gold grey".split(),
                                  "apple river stone cloud maple tiger lemon piano".split(), strict=True)]
    config = FinetuneConfig(task="text-generation", method="lora", max_steps=6, batch_size=4, learning_rate=2e-3,
                            seed=0, eval_fraction=0.25, max_length=64)
    result = finetune(smollm2_dir, tmp_path / "child", rows, config, adapter_dir=tmp_path / "adapter")
    assert result.eval_loss is not None and result.eval_loss_before is not None
    assert result.eval_loss < result.eval_loss_before

    # The merged child against base+adapter, both computed in float64: the merge itself (saved as fp32
    # weights) is all that differs. Measured 1.9e-5 max abs over logits of up to ~38 (2.0e-5 for a merge
    # done in float64 and rounded to fp32: merging in fp32 loses nothing; the rest is fp32 storage).
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    held = split(rows, config.eval_fraction, config.seed)[1]
    probes = [torch.tensor([_encode_sft(tok, r, 64, tok.eos_token_id)[0]]) for r in held]

    def logits(folder: Path, dtype: torch.dtype, adapter: Path | None = None) -> list[torch.Tensor]:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter)).to(dtype)
        with torch.no_grad():
            return [model.eval()(ids).logits[0].double() for ids in probes]

    def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    adapted64 = logits(smollm2_dir, torch.float64, tmp_path / "adapter")
    assert gap(logits(tmp_path / "child", torch.float64), adapted64) < 1e-4
    # In fp32, W·x + B·(A·x) and (W + B·A)·x round differently (measured 1.1e-4 to 1.3e-4 on the probe
    # batch): no more than fp32 arithmetic itself is off base+adapter's own float64 logits (1.2e-4).
    fp32_noise = gap(logits(smollm2_dir, torch.float32, tmp_path / "adapter"), adapted64)
    assert result.merge_max_abs_diff is not None and result.merge_max_abs_diff < 2 * fp32_noise


NER = [{"tokens": ["Alice", "visited", city, "yesterday"], "tags": ["B-PER", "O", "B-LOC", "O"]}
       for city in ("Paris", "Berlin", "Tokyo", "Lisbon", "Nairobi", "Quito", "Oslo", "Hanoi")] * 2


def test_it_puts_each_word_tag_on_its_first_piece_only(bert: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(bert))
    row = {"tokens": ["Kilimanjaro", "is", "tall"], "tags": ["B-LOC", "O", "O"]}
    ids, labels = _encode_words(tok, row, 64, {"B-LOC": 0, "O": 1})
    pieces = len(tok("Kilimanjaro", add_special_tokens=False)["input_ids"])
    assert pieces > 1 and len(ids) == len(labels) == pieces + 4  # [CLS] pieces is tall [SEP]
    assert labels == [IGNORE, 0] + [IGNORE] * (pieces - 1) + [1, 1, IGNORE]


def test_it_trains_a_token_classifier_on_the_tags_of_the_data(bert: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(task="token-classification", method="full", epochs=6, batch_size=4, learning_rate=1e-2,
                            seed=0, eval_fraction=0.25)
    result = finetune(bert, tmp_path / "ner", NER, config)
    assert result.labels == ["B-LOC", "B-PER", "O"]
    assert result.eval_loss is not None and result.eval_loss_before is not None
    assert result.eval_loss < 0.5 * result.eval_loss_before and result.eval_accuracy is not None
    assert result.eval_accuracy > 0.9
    child = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "ner"))
    assert child.config.id2label == {0: "B-LOC", 1: "B-PER", 2: "O"}

"""Evaluation metrics against hand-computed values, and `evaluator.run()` on tiny random models and on the real
SmolLM2, whose sliding-window perplexity must match a direct transformers computation within 0.5 %."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine.config import EngineConfig
from engine.evaluate import (
    PeakMemory,
    Window,
    answer_in_output,
    classification_scores,
    encoder_figures,
    entities,
    entity_scores,
    exact_match,
    generation_figures,
    perplexity,
    qa_scores,
    token_f1,
    windows,
)
from engine.evaluator import Settings, run, word_tags
from tests.modelfactory import _copy_tokenizer, tiny_bert_dir

DATA = Path(__file__).resolve().parents[2] / "console" / "evaluation" / "data"
SMALL = EngineConfig(dtype="float32", kv_cache_bytes=4 << 20, max_num_seqs=8)  # float32 on any device: parity


# --- perplexity ----------------------------------------------------------------------------------------------
def test_windows_start_every_stride_and_score_only_what_the_previous_window_did_not_reach() -> None:
    assert windows(10, context=4, stride=2) == [Window(0, 4, 4), Window(2, 6, 2), Window(4, 8, 2), Window(6, 10, 2)]
    assert windows(6, context=4, stride=4) == [Window(0, 4, 4), Window(4, 6, 2)]
    assert windows(3, context=8, stride=4) == [Window(0, 3, 3)]
    with pytest.raises(ValueError, match="stride <= context"):
        windows(10, context=4, stride=5)


def context_helps(chunk: list[int]) -> torch.Tensor:
    """Two-token vocabulary: the next token gets probability 0.5 at a window's first position and
    0.8 wherever the window already holds more context."""
    rows = []
    for j in range(len(chunk)):
        q = 0.5 if j == 0 else 0.8
        right = chunk[j + 1] if j + 1 < len(chunk) else 0
        p = [1 - q, 1 - q]
        p[right] = q
        rows.append([math.log(x) for x in p])
    return torch.tensor(rows)


def test_sliding_window_perplexity_matches_the_hand_computed_value() -> None:
    ids = [0, 1, 1, 0, 1, 0]
    # windows [0,4) scores tokens 1..3 (q = .5, .8, .8); [2,6) scores tokens 4, 5 with context (q = .8, .8)
    result = perplexity(context_helps, ids, context=4, stride=2)
    assert (result.tokens, result.windows) == (5, 2)
    assert result.perplexity == pytest.approx((1 / (0.5 * 0.8 ** 4)) ** (1 / 5), rel=1e-6)
    # without overlap the second window starts cold: token 4 is its first (not scored), token 5 gets q = .5
    cold = perplexity(context_helps, ids, context=4, stride=4)
    assert cold.tokens == 4 and cold.perplexity == pytest.approx((1 / (0.5 * 0.8 * 0.8 * 0.5)) ** (1 / 4), rel=1e-6)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity() -> None:
    result = perplexity(lambda chunk: torch.zeros(len(chunk), 50), list(range(40)), context=16, stride=8)
    assert result.perplexity == pytest.approx(50.0) and result.tokens == 39


def test_perplexity_reports_progress_per_window_and_stops_when_the_callback_raises() -> None:
    seen: list[float] = []
    perplexity(context_helps, [0, 1] * 10, context=8, stride=4, on_progress=lambda f, msg: seen.append(f))
    assert seen == [0.25, 0.5, 0.75, 1.0]

    def stop(fraction: float, message: str) -> None:
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        perplexity(context_helps, [0, 1] * 10, context=8, stride=4, on_progress=stop)


# --- QA ------------------------------------------------------------------------------------------------------
def test_exact_match_ignores_case_punctuation_articles_and_spacing() -> None:
    assert exact_match("The  Paris!", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_token_f1_counts_shared_words() -> None:
    # "big red dog" vs "red dog barked": 2 shared of 3 each → precision = recall = 2/3
    assert token_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    assert token_f1("it is four", "four") == pytest.approx(0.5)  # p = 1/3, r = 1
    assert token_f1("", "") == 1.0 and token_f1("word", "") == 0.0


def test_an_answer_in_the_output_counts_only_as_whole_words() -> None:
    assert answer_in_output("The capital of France is Paris.", "paris") == 1.0
    assert answer_in_output("It takes in carbon dioxide, mostly.", "Carbon dioxide") == 1.0
    assert answer_in_output("Parisian food is rich.", "Paris") == 0.0


def test_qa_scores_average_the_best_answer_of_each_example() -> None:
    scores = qa_scores(["Paris", "whale", "it is four", "I do not know"],
                       ["paris", ["the blue whale", "whale"], "four", "Lima"])
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["token_f1"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert scores["answer_in_output"] == pytest.approx(3 / 4)


# --- classification ------------------------------------------------------------------------------------------
def test_accuracy_and_macro_f1_match_the_hand_computed_values() -> None:
    scores = classification_scores(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"])
    # a: tp 1 fp 1 fn 1 → 0.5; b: tp 2 fp 1 → 0.8; c: never predicted → 0
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_a_predicted_label_missing_from_the_gold_labels_still_counts_in_the_macro_average() -> None:
    assert classification_scores(["x", "x"], ["x", "y"])["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


# --- NER -----------------------------------------------------------------------------------------------------
def test_entities_are_found_as_seqeval_finds_them() -> None:
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert entities(["I-PER", "I-PER", "O"]) == {("PER", 0, 1)}  # conlleval: I- after O starts an entity
    assert entities(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # a type change splits
    assert entities(["B-PER", "B-PER"]) == {("PER", 0, 0), ("PER", 1, 1)}
    assert entities(["S-ORG", "B-PER", "E-PER", "O"]) == {("ORG", 0, 0), ("PER", 1, 2)}  # IOBES
    assert entities(["O", "O"]) == set()


def test_entity_f1_counts_an_entity_only_when_type_and_both_ends_match() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "O"]]
    assert entity_scores(gold, pred) == pytest.approx(
        {"entity_precision": 1.0, "entity_recall": 1 / 3, "entity_f1": 0.5})
    short = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # PER cut short: wrong; LOC, ORG right
    assert entity_scores(gold, short) == pytest.approx(
        {"entity_precision": 2 / 3, "entity_recall": 2 / 3, "entity_f1": 2 / 3})


# --- latency and memory --------------------------------------------------------------------------------------
def test_generation_figures_are_mean_and_median_ttft_and_tokens_per_wall_second() -> None:
    figures = generation_figures([0.1, 0.3, 0.2, 0.4], generated_tokens=40, wall_s=2.0)
    assert figures["ttft_s"] == pytest.approx(0.25) and figures["ttft_p50_s"] == pytest.approx(0.25)
    assert figures["tokens_per_s"] == pytest.approx(20.0)
    assert generation_figures([0.3, 0.1, 0.2], 9, 3.0)["ttft_p50_s"] == pytest.approx(0.2)


def test_encoder_figures_are_examples_and_input_tokens_per_wall_second() -> None:
    assert encoder_figures(examples=30, input_tokens=600, wall_s=1.5) == pytest.approx(
        {"examples_per_s": 20.0, "tokens_per_s": 400.0, "wall_s": 1.5})


def test_peak_memory_sees_a_short_lived_allocation() -> None:
    size = 96 << 20
    with PeakMemory() as memory:
        block = b"x" * size
        del block
    assert size * 0.9 <= memory.peak_bytes < size * 2


# --- run() on tiny models ------------------------------------------------------------------------------------
def hf_guide_perplexity(folder: Path, text: str, context: int, stride: int) -> float:
    """The Hugging Face perplexity guide, verbatim in substance: labels masked to -100 before each
    window's new tokens, the mean loss weighted by the window's scored tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    encodings = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
    seq_len = encodings.input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + context, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_loss_tokens = int((target_ids != -100).sum()) - target_ids.size(0)
        nll_sum += float(loss) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def test_run_on_a_text_measures_perplexity_latency_and_memory(tiny_llama: Path) -> None:
    text = (DATA / "plain-english.txt").read_text()[:1500]
    steps: list[float] = []
    metrics = run(tiny_llama, "text", text, SMALL, Settings(context_length=128, stride=64, latency_requests=3,
                                                            max_new_tokens=8),
                  on_progress=lambda f, msg: steps.append(f))
    assert metrics["perplexity"] == pytest.approx(hf_guide_perplexity(tiny_llama, text, 128, 64), rel=5e-3)
    assert metrics["generated_tokens"] == 3 * 8 and metrics["tokens_per_s"] > 0 and metrics["ttft_s"] > 0
    assert metrics["peak_memory_bytes"] > 0 and metrics["context_length"] == 128
    assert metrics["runtime"] == "torch" and metrics["perplexity_runtime"] == "torch"  # no GGUF: torch throughout
    assert steps[0] == 0.0 and steps[-1] == pytest.approx(1.0) and steps == sorted(steps)


def test_run_on_qa_generates_one_answer_per_prompt(tiny_llama: Path) -> None:
    examples = [json.loads(line) for line in (DATA / "simple-qa.jsonl").read_text().splitlines()][:4]
    metrics = run(tiny_llama, "qa", examples, SMALL, Settings(max_new_tokens=6))
    assert metrics["examples"] == 4 and 0 <= metrics["exact_match"] <= metrics["token_f1"] <= 1
    assert 0 < metrics["generated_tokens"] <= 4 * 6 and metrics["ttft_p50_s"] > 0


def test_run_on_classification_scores_the_models_top_label(tmp_path: Path) -> None:
    from engine.encoders import ClassificationEngine

    folder = tiny_bert_dir(tmp_path / "bert", num_labels=2)
    examples = [{"text": t, "label": label} for t, label in [
        ("a fine day", "LABEL_0"), ("a grey day", "LABEL_1"), ("rain again", "LABEL_1"), ("sun", "LABEL_0")]]
    metrics = run(folder, "classification", examples, SMALL, Settings(batch_size=3))
    predicted = [r[0].label for r in ClassificationEngine(folder).classify([e["text"] for e in examples], top_k=1)]
    assert {k: metrics[k] for k in ("accuracy", "macro_f1")} == pytest.approx(
        classification_scores([e["label"] for e in examples], predicted))
    assert metrics["examples"] == 4 and metrics["examples_per_s"] > 0


def tiny_ner_dir(folder: Path) -> Path:
    from transformers import BertConfig, BertForTokenClassification

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, id2label=dict(enumerate(labels)),
                        label2id={x: i for i, x in enumerate(labels)})
    BertForTokenClassification(config).save_pretrained(folder)
    _copy_tokenizer(folder, chat_template=False)
    return folder


def test_ner_tags_each_word_by_its_first_word_piece(tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from engine.encoders import TokenClassificationEngine

    folder = tiny_ner_dir(tmp_path / "ner")
    sentences = [["Angela", "Merkel", "visited", "Washington"], ["nothing", "here"]]
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    expected = []
    for words in sentences:
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            best = model(**enc).logits.argmax(-1)[0]
        firsts = {}
        for pos, word in enumerate(enc.word_ids(0)):
            if word is not None and word not in firsts:
                firsts[word] = model.config.id2label[int(best[pos])]
        expected.append([firsts[i] for i in range(len(words))])
    assert word_tags(TokenClassificationEngine(folder), sentences) == expected

    examples = [{"tokens": s, "tags": ["B-PER", "I-PER", "O", "B-LOC"][:len(s)]} for s in sentences]
    metrics = run(folder, "ner", examples, SMALL)
    assert {k: metrics[k] for k in ("entity_precision", "entity_recall", "entity_f1")} == pytest.approx(
        entity_scores([e["tags"] for e in examples], expected))


def test_a_run_stopped_by_its_progress_callback_closes_the_engine(tiny_llama: Path) -> None:
    calls = []

    def stop_second(fraction: float, message: str) -> None:
        calls.append(message)
        if len(calls) == 2:
            raise KeyboardInterrupt("cancel")

    with pytest.raises(KeyboardInterrupt):
        run(tiny_llama, "text", "word " * 400, SMALL, Settings(context_length=64, stride=32), on_progress=stop_second)
    assert calls[0] == "loading the model" and len(calls) == 2


# --- the real model -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_perplexity_on_the_built_in_text_matches_transformers_within_half_a_percent(smollm2_dir: Path) -> None:
    text = (DATA / "plain-english.txt").read_text()
    metrics = run(smollm2_dir, "text", text, EngineConfig(dtype="float32", kv_cache_bytes=32 << 20, max_num_seqs=4),
                  Settings(context_length=1024, stride=512, latency_requests=2, max_new_tokens=8))
    direct = hf_guide_perplexity(smollm2_dir, text, 1024, 512)
    print(f"SmolLM2 perplexity: engine {metrics['perplexity']:.4f}, transformers {direct:.4f}, "
          f"{metrics['tokens']} tokens in {metrics['windows']} windows; {metrics['tokens_per_s']:.1f} tok/s")
    assert metrics["windows"] == 2 and metrics["tokens"] > 1024
    assert abs(metrics["perplexity"] / direct - 1) < 0.005


@pytest.mark.slow
def test_speed_is_measured_on_the_runtime_that_would_serve_the_version_and_perplexity_on_torch(
        smollm2_gguf_dir: Path) -> None:
    text = (DATA / "plain-english.txt").read_text()[:400]
    settings = Settings(context_length=32, stride=32, latency_requests=2, max_new_tokens=4)
    config = EngineConfig(kv_cache_bytes=32 << 20, max_num_seqs=2, threads=1)  # runtime auto
    metrics = run(smollm2_gguf_dir, "text", text, config, settings)  # a version that kept its GGUF
    assert metrics["runtime"] == "llamacpp" and metrics["runtime_note"].startswith("llama.cpp")
    assert metrics["perplexity_runtime"] == "torch" and 1 < metrics["perplexity"] < 1000
    assert metrics["generated_tokens"] == 2 * 4 and metrics["tokens_per_s"] > 0 and metrics["ttft_s"] > 0
    qa = run(smollm2_gguf_dir, "qa", [{"prompt": "What colour is the sky?", "answer": "blue"}], config,
             Settings(max_new_tokens=4))
    assert qa["runtime"] == "llamacpp" and qa["examples"] == 1

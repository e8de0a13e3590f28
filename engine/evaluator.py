"""`run()`: load one model folder under an engine config and measure it on one dataset: its quality
metrics (engine.evaluate) for the dataset's kind, and always its speed and peak memory.

Progress goes to `on_progress(fraction, message)`; an exception raised there (a cancel) stops the
run, and the engine is closed on the way out."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.evaluate import (
    PeakMemory,
    Progress,
    classification_scores,
    encoder_figures,
    entity_scores,
    generation_figures,
    perplexity,
    qa_scores,
)

KINDS = ("text", "classification", "qa", "ner")
TASK_OF_KIND = {"text": "text-generation", "qa": "text-generation", "classification": "text-classification",
                "ner": "token-classification"}


@dataclass(slots=True)
class Settings:
    context_length: int = 1024  # perplexity window
    stride: int = 512  # perplexity window step
    max_new_tokens: int = 32  # per generated answer or latency request
    max_examples: int = 200  # first N examples of a dataset (0: all)
    latency_requests: int = 4  # concurrent generations that measure latency on a text dataset
    batch_size: int = 16  # encoder batches

    def __post_init__(self) -> None:
        for name in ("context_length", "stride", "max_new_tokens", "latency_requests", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.context_length < 2 or self.stride > self.context_length:
            raise ValueError("need context_length >= 2 and stride <= context_length")
        if not isinstance(self.max_examples, int) or self.max_examples < 0:
            raise ValueError(f"max_examples must be 0 (all) or a positive integer, got {self.max_examples!r}")


def _scaled(on_progress: Progress | None, start: float, end: float) -> Progress | None:
    if on_progress is None:
        return None
    return lambda f, msg: on_progress(start + (end - start) * f, msg)


def run(folder: str | Path, kind: str, data: Any, config: Any = None, settings: Settings | None = None,
        on_progress: Progress | None = None) -> dict[str, float]:
    """Load `folder` under engine config `config` and measure it on `data`: a str for `text`, else a
    list of examples (dicts with text/label, prompt/answer or tokens/tags). Returns the metrics."""
    from engine.api import Engine, runtime_of
    from engine.config import EngineConfig

    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; one of {', '.join(KINDS)}")
    settings = settings or Settings()
    config = config or EngineConfig()
    # perplexity needs the torch weights' logits: it is measured on the safetensors weights with torch;
    # tokens/s and TTFT (and a QA dataset's answers) come from the runtime the version would be served
    # with under `config` (auto: llama.cpp for a version that kept its GGUF), named in the metrics
    torch_config = dataclasses.replace(config, runtime="torch")
    if kind != "text" and settings.max_examples:
        data = data[:settings.max_examples]
    report = on_progress or (lambda f, msg: None)
    task = TASK_OF_KIND[kind]
    with PeakMemory(config.resolved_device()) as memory:
        report(0.0, "loading the model")
        started = time.perf_counter()
        engine = Engine.from_pretrained(folder, torch_config if kind in ("text", "classification", "ner")
                                        else config, task=task)
        load_s = time.perf_counter() - started
        try:
            if kind == "text":
                metrics = _text(engine, data, settings, _scaled(report, 0, 0.8))
                if runtime_of(folder, config) != "torch":  # the latency on the runtime that would serve it
                    engine.close()
                    engine = None
                    report(0.8, "loading the serving runtime")
                    engine = Engine.from_pretrained(folder, config, task=task)
                metrics.update(_latency(engine, data, settings, _scaled(report, 0.8, 1.0)))
                metrics["perplexity_runtime"] = "torch"
            elif kind == "qa":
                metrics = _qa(engine, data, settings, report)
            elif kind == "classification":
                metrics = _classification(engine, data, settings, report)
            else:
                metrics = _ner(engine, data, settings, report)
            metrics["runtime"] = getattr(engine, "runtime", "torch")
            metrics["runtime_note"] = getattr(engine, "runtime_note", "") or metrics["runtime"]
        finally:
            if engine is not None:
                engine.close()
            del engine
    return {**metrics, "load_s": load_s, "peak_memory_bytes": memory.peak_bytes}


def _text(engine: Any, text: str, settings: Settings, report: Progress | None) -> dict[str, float]:
    from engine.runner import full_forward

    ids = engine.encode(text)
    context = min(settings.context_length, engine.model_len)  # a full forward: no KV cache involved
    stride = min(settings.stride, context)
    ppl = perplexity(lambda chunk: full_forward(engine.stack, chunk), ids, context, stride, report)
    return {"perplexity": ppl.perplexity, "nll": ppl.nll, "tokens": ppl.tokens, "windows": ppl.windows,
            "context_length": context, "stride": stride}


def _latency(engine: Any, text: str, settings: Settings, report: Progress | None) -> dict[str, float]:
    """The first words of each paragraph as prompts, all at once (they share batches)."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [text]
    prompts = [engine.encode(" ".join(p.split()[:24])) for p in paragraphs[:settings.latency_requests]]
    prompts = [prompts[i % len(prompts)] for i in range(settings.latency_requests)]
    figures, _ = _generate(engine, prompts, settings.max_new_tokens, True, report)
    return figures


def _qa(engine: Any, examples: list[dict[str, Any]], settings: Settings, report: Progress) -> dict[str, float]:
    prompts = []
    for ex in examples:
        chat = getattr(engine.tokenizer, "chat_template", None)
        prompts.append(engine.encode([{"role": "user", "content": ex["prompt"]}] if chat else ex["prompt"]))
    figures, texts = _generate(engine, prompts, settings.max_new_tokens, False, report)
    return {**qa_scores([t.strip() for t in texts], [ex["answer"] for ex in examples]),
            "examples": len(examples), **figures}


def _generate(engine: Any, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool,
              report: Progress | None) -> tuple[dict[str, float], list[str]]:
    """Submit every prompt at once (greedy); wait, reporting as answers finish, cancelling the rest
    if the report raises. Returns the latency figures and the answers in prompt order."""
    from engine.config import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, ignore_eos=ignore_eos, fit_context=True)
    started = time.perf_counter()
    handles = [engine.generate(p, params) for p in prompts]
    completions = []
    try:
        for h in handles:
            while True:
                try:
                    completions.append(h.result(timeout=0.5))
                    break
                except TimeoutError:
                    pass
                finally:
                    if report:
                        report(len(completions) / len(handles), f"generated {len(completions)}/{len(handles)} answers")
    finally:
        for h in handles:
            h.cancel()
    wall = time.perf_counter() - started
    tokens = sum(c.usage.completion_tokens for c in completions)
    ttfts = [c.ttft_s for c in completions if c.ttft_s is not None] or [wall]
    return generation_figures(ttfts, tokens, wall), [c.text for c in completions]


def _encoder_figures(engine: Any, texts: list[str], wall_s: float) -> dict[str, float]:
    tokens = sum(len(ids) for ids in engine.tokenizer(texts, truncation=True, max_length=engine.max_length)["input_ids"])
    return encoder_figures(len(texts), tokens, wall_s)


def _batched(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def _classification(engine: Any, examples: list[dict[str, Any]], settings: Settings,
                    report: Progress) -> dict[str, float]:
    texts = [ex["text"] for ex in examples]
    predicted: list[str] = []
    started = time.perf_counter()
    for start, batch in _batched(texts, settings.batch_size):
        predicted += [labels[0].label for labels in engine.classify(batch, top_k=1)]
        report((start + len(batch)) / len(texts), f"classified {start + len(batch)}/{len(texts)}")
    wall = time.perf_counter() - started
    return {**classification_scores([str(ex["label"]) for ex in examples], predicted), "examples": len(examples),
            **_encoder_figures(engine, texts, wall)}


def word_tags(engine: Any, sentences: list[list[str]]) -> list[list[str]]:
    """One predicted tag per word: the label of the word's first sub-token (words cut off by the
    model's length limit get `O`)."""
    import torch

    id2label = engine.model.config.id2label
    enc = engine.tokenizer(sentences, is_split_into_words=True, truncation=True, padding=True,
                           max_length=engine.max_length, return_tensors="pt")
    with torch.inference_mode():
        best = engine.model(**enc.to(engine.device)).logits.argmax(dim=-1).cpu()
    out = []
    for row, words in enumerate(sentences):
        tags = ["O"] * len(words)
        seen: set[int] = set()
        for pos, word in enumerate(enc.word_ids(row)):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = id2label[int(best[row, pos])]
        out.append(tags)
    return out


def _ner(engine: Any, examples: list[dict[str, Any]], settings: Settings, report: Progress) -> dict[str, float]:
    sentences = [list(ex["tokens"]) for ex in examples]
    predicted: list[list[str]] = []
    started = time.perf_counter()
    for start, batch in _batched(sentences, settings.batch_size):
        predicted += word_tags(engine, batch)
        report((start + len(batch)) / len(sentences), f"tagged {start + len(batch)}/{len(sentences)}")
    wall = time.perf_counter() - started
    return {**entity_scores([ex["tags"] for ex in examples], predicted), "examples": len(examples),
            **_encoder_figures(engine, [" ".join(s) for s in sentences], wall)}

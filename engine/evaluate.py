"""Evaluation metrics: pure functions over plain lists (engine.evaluator runs a model to get them).

- perplexity: sliding windows of `context` tokens moved by `stride`, as the Hugging Face perplexity
  guide computes it; each token is scored once, with as much left context as its window gives;
- QA: exact match and token-level F1 after SQuAD's normalisation (lower case, no punctuation or
  articles), and whether the answer appears in the output at all; the best over the acceptable answers;
- classification: accuracy and macro F1 (every label seen in either list counts equally);
- NER: entity-level precision, recall and F1 over BIO/IOBES tags, entities found as seqeval
  (conlleval) finds them;
- speed: time to first token and tokens/s of generations, examples/s of encoders, and the peak
  memory a block of work took."""

from __future__ import annotations

import math
import re
import string
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Progress = Callable[[float, str], None]  # on_progress(fraction 0..1, message); may raise to stop the work


# --- perplexity ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Window:
    begin: int  # first token of the window
    end: int  # one past its last token
    targets: int  # how many of its last tokens are scored here (the rest is context only)


def windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The HF guide's windows: start every `stride` tokens, `context` long, score only the tokens
    the previous window did not reach."""
    if context < 2 or not 1 <= stride <= context:
        raise ValueError(f"need context >= 2 and 1 <= stride <= context, got context={context}, stride={stride}")
    out: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        out.append(Window(begin, end, end - prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return out


@dataclass(slots=True)
class Perplexity:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored
    windows: int


def perplexity(forward: Callable[[list[int]], Any], ids: Sequence[int], context: int, stride: int,
               on_progress: Progress | None = None) -> Perplexity:
    """`forward(ids)` returns logits [len(ids), vocab] for one window. Each token is scored at most
    once, in the first window that reaches it; as in the guide, a window's own first token is never
    scored (nothing to its left), which with stride == context skips one token per window."""
    import torch
    import torch.nn.functional as F

    if len(ids) < 2:
        raise ValueError("the text needs at least two tokens for perplexity")
    spans = windows(len(ids), context, stride)
    total, count = 0.0, 0
    for n, w in enumerate(spans):
        chunk = list(ids[w.begin:w.end])
        first = max(len(chunk) - w.targets, 1)  # window position of the first scored token
        logits = forward(chunk)  # [L, V]
        target = torch.tensor(chunk[first:], device=logits.device)
        total += float(F.cross_entropy(logits[first - 1:-1].float(), target, reduction="sum"))
        count += len(chunk) - first
        if on_progress:
            on_progress((n + 1) / len(spans), f"perplexity window {n + 1}/{len(spans)}")
    nll = total / count
    return Perplexity(math.exp(nll), nll, count, len(spans))


# --- question answering ----------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_in_output(prediction: str, answer: str) -> float:
    """1 when the normalized answer appears as whole words in the normalized prediction: the lenient
    score of open-ended QA, for chat models that answer in a sentence ("The capital is Paris.")."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not gold:
        return float(not pred)
    return float(any(pred[i:i + len(gold)] == gold for i in range(len(pred) - len(gold) + 1)))


def qa_scores(predictions: Sequence[str], answers: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean exact match, token F1 and answer-in-output; an example with several acceptable answers
    takes its best."""
    if len(predictions) != len(answers) or not answers:
        raise ValueError("need one prediction per example, and at least one example")
    em = f1 = found = 0.0
    for pred, gold in zip(predictions, answers, strict=True):
        golds = [gold] if isinstance(gold, str) else list(gold)
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(token_f1(pred, g) for g in golds)
        found += max(answer_in_output(pred, g) for g in golds)
    n = len(answers)
    return {"exact_match": em / n, "token_f1": f1 / n, "answer_in_output": found / n}


# --- classification --------------------------------------------------------------------------------------
def classification_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro F1 over every label in either list (a label never predicted scores 0)."""
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError("need one prediction per example, and at least one example")
    f1s = []
    for label in sorted(set(y_true) | set(y_pred)):
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == label and p != label for t, p in zip(y_true, y_pred, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


# --- named entities --------------------------------------------------------------------------------------
def _split_tag(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", "_"
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind else ("I", prefix)  # a bare "PER" reads as inside a PER entity


def _ends(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (prev in ("E", "S") or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev != "O" and prev_kind != kind))


def _starts(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_kind != kind))


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity in one tag sequence, found as seqeval's default
    (conlleval) mode finds them: an `I-` after `O` or after another type starts an entity."""
    found: set[tuple[str, int, int]] = set()
    prev, prev_kind, begin = "O", "_", 0
    for i, tag in enumerate([*tags, "O"]):
        cur, kind = _split_tag(tag)
        if _ends(prev, cur, prev_kind, kind):
            found.add((prev_kind, begin, i - 1))
        if _starts(prev, cur, prev_kind, kind):
            begin = i
        prev, prev_kind = cur, kind
    return found


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over sentences (an entity counts only when
    its type and both ends match)."""
    if len(true_tags) != len(pred_tags) or not true_tags:
        raise ValueError("need one predicted tag sequence per sentence, and at least one sentence")
    gold: set[tuple[int, str, int, int]] = set()
    pred: set[tuple[int, str, int, int]] = set()
    for n, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {n + 1}: {len(t)} gold tags but {len(p)} predicted")
        gold |= {(n, *e) for e in entities(t)}
        pred |= {(n, *e) for e in entities(p)}
    hits = len(gold & pred)
    precision = hits / len(pred) if pred else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


# --- latency, throughput, memory -------------------------------------------------------------------------
def generation_figures(ttfts: Sequence[float], generated_tokens: int, wall_s: float) -> dict[str, float]:
    """Mean and median time to first token, and generated tokens per second of wall time."""
    if not ttfts or wall_s <= 0:
        raise ValueError("need at least one request and a positive wall time")
    ordered = sorted(ttfts)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"ttft_s": sum(ordered) / len(ordered), "ttft_p50_s": median,
            "tokens_per_s": generated_tokens / wall_s, "generated_tokens": generated_tokens, "wall_s": wall_s}


def encoder_figures(examples: int, input_tokens: int, wall_s: float) -> dict[str, float]:
    """Examples and input tokens per second of wall time (encoders have no first token to wait for)."""
    if wall_s <= 0:
        raise ValueError("need a positive wall time")
    return {"examples_per_s": examples / wall_s, "tokens_per_s": input_tokens / wall_s, "wall_s": wall_s}


def _rss_bytes() -> int:
    import resource

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_high_water_mark() -> bool:
    """Linux keeps the peak resident size (VmHWM); writing 5 to clear_refs resets it to the current size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _high_water_mark() is not None
    except OSError:
        return False


def _high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            found = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


class PeakMemory:
    """The most memory a block took above what the process held when it began: the kernel's
    resident high-water mark where it can be reset (Linux), else resident memory sampled every few
    milliseconds; on CUDA the peak allocated device memory."""

    def __init__(self, device: str = "cpu", interval_s: float = 0.005):
        self.device, self.interval_s = device, interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel = False

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        from engine.loader import release_memory

        release_memory()
        self._base = self._top = _rss_bytes()
        self._kernel = _reset_high_water_mark()
        if not self._kernel:
            self._thread = threading.Thread(target=self._sample, name="tauon-peak-memory", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._top = max(self._top, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            self.peak_bytes = max(0, torch.cuda.max_memory_allocated() - self._base)
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        top = (_high_water_mark() if self._kernel else None) or max(self._top, _rss_bytes())
        self.peak_bytes = max(0, top - self._base)

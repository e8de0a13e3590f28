"""Encoder models, batched: sentence embeddings, sequence classification, token classification
(named entities, grouped).

Embeddings follow the model's sentence-transformers files: `modules.json` lists the pipeline,
`1_Pooling/config.json` (or wherever modules.json points) the pooling, a `Normalize` module the
L2 normalisation, and `sentence_bert_config.json` the maximum sequence length."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import loader
from engine.config import EngineConfig

POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken")


class PriorityLock:
    """The model's forward passes, one at a time, in priority order: when the holder lets go, the waiter with
    the lowest `priority` goes next (0 interactive, higher background such as a `predict` job's chunks), the
    earliest first among equals. So a background request yields to interactive ones between its batches (of
    at most `batch_size` texts): an interactive request waits for at most the one batch already running."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._waiting: list[tuple[int, int]] = []  # a heap of (priority, ticket)
        self._tickets = itertools.count()

    @contextmanager
    def hold(self, priority: int = 0) -> Iterator[None]:
        with self._cond:
            me = (int(priority), next(self._tickets))
            heapq.heappush(self._waiting, me)
            while self._busy or self._waiting[0] != me:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


@dataclass(slots=True)
class Pooling:
    mode: str = "mean_tokens"
    normalize: bool = False
    max_seq_length: int | None = None

    @classmethod
    def from_folder(cls, folder: Path) -> Pooling:
        """What sentence-transformers would do with this folder; mean pooling when it says nothing."""
        pooling = cls()
        modules_path = folder / "modules.json"
        if modules_path.is_file():
            for module in json.loads(modules_path.read_text()):
                kind = module.get("type", "").rsplit(".", 1)[-1]
                if kind == "Pooling":
                    cfg = json.loads((folder / module.get("path", "") / "config.json").read_text())
                    modes = [m for m in POOLING_MODES if cfg.get(f"pooling_mode_{m}")]
                    if len(modes) != 1:
                        raise ValueError(f"pooling config enables {modes or 'no mode'}; exactly one is supported")
                    pooling.mode = modes[0]
                elif kind == "Normalize":
                    pooling.normalize = True
        sbert = folder / "sentence_bert_config.json"
        if sbert.is_file():
            pooling.max_seq_length = json.loads(sbert.read_text()).get("max_seq_length")
        return pooling

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden: [B, S, H]; mask: [B, S] (1 for real tokens)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.mode == "cls_token":
            out = hidden[:, 0]
        elif self.mode == "max_tokens":
            out = hidden.masked_fill(m == 0, float("-inf")).amax(dim=1)
        elif self.mode == "lasttoken":
            last = mask.sum(dim=1) - 1
            out = hidden[torch.arange(hidden.shape[0]), last]
        else:
            summed, count = (hidden * m).sum(dim=1), m.sum(dim=1).clamp(min=1e-9)
            out = summed / (count if self.mode == "mean_tokens" else count.sqrt())
        return torch.nn.functional.normalize(out, p=2, dim=-1) if self.normalize else out


class _Encoder:
    auto_class = "AutoModel"

    def __init__(self, folder: str | Path, config: EngineConfig | None = None, batch_size: int = 32):
        config = config or EngineConfig()
        self.folder = Path(folder)
        self.device = config.resolved_device()
        self.model = loader.load_model(self.folder, self.auto_class, device=self.device,
                                       dtype=config.resolved_dtype(self.device))
        self.tokenizer = loader.load_tokenizer(self.folder)
        self.batch_size = batch_size
        self.max_length = min(getattr(self.model.config, "max_position_embeddings", 512), 8192)
        self._lock = PriorityLock()

    def _batches(self, texts: list[str]) -> list[list[int]]:
        """Indices grouped into batches of similar length (less padding)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("pass a list of strings")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _encode(self, texts: list[str], **kwargs: Any) -> Any:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt", **kwargs)

    def close(self) -> None:
        pass


@dataclass(slots=True)
class Embeddings:
    vectors: torch.Tensor  # [N, dim] float32, in input order
    prompt_tokens: int


class EmbeddingEngine(_Encoder):
    def __init__(self, folder: str | Path, config: EngineConfig | None = None, batch_size: int = 32):
        super().__init__(folder, config, batch_size)
        self.pooling = Pooling.from_folder(self.folder)
        if self.pooling.max_seq_length:
            self.max_length = min(self.max_length, self.pooling.max_seq_length)

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: list[str], priority: int = 0) -> Embeddings:
        out = torch.empty(len(texts), self.dimension)
        tokens = 0
        for idx in self._batches(texts):
            enc = self._encode([texts[i] for i in idx]).to(self.device)
            with self._lock.hold(priority):
                hidden = self.model(**enc).last_hidden_state
            out[idx] = self.pooling(hidden, enc["attention_mask"]).float().cpu()
            tokens += int(enc["attention_mask"].sum())
        return Embeddings(out, tokens)


@dataclass(slots=True)
class Label:
    label: str
    score: float


class ClassificationEngine(_Encoder):
    auto_class = "AutoModelForSequenceClassification"

    @torch.inference_mode()
    def classify(self, texts: list[str], top_k: int | None = None, priority: int = 0) -> list[list[Label]]:
        """Labels with scores for each text, best first (softmax, or sigmoid for multi-label models); `priority`:
        see PriorityLock."""
        id2label = self.model.config.id2label
        multi = self.model.config.problem_type == "multi_label_classification"
        results: list[list[Label]] = [[] for _ in texts]
        for idx in self._batches(texts):
            enc = self._encode([texts[i] for i in idx]).to(self.device)
            with self._lock.hold(priority):
                logits = self.model(**enc).logits.float()
            scores = logits.sigmoid() if multi else logits.softmax(dim=-1)
            for row, i in enumerate(idx):
                vals, ids = scores[row].sort(descending=True)
                labels = [Label(id2label[int(j)], float(v)) for v, j in zip(vals, ids, strict=True)]
                results[i] = labels[:top_k] if top_k else labels
        return results


@dataclass(slots=True)
class Entity:
    entity_group: str
    score: float
    word: str
    start: int
    end: int


def group_entities(text: str, labels: list[str], scores: list[float],
                   offsets: list[tuple[int, int]]) -> list[Entity]:
    """Join consecutive tokens into entities: a `B-` label or a change of type starts a new one,
    `O` ends it; pieces glued to the previous token (no gap in the text) stay in its word."""
    entities: list[Entity] = []
    cur: tuple[str, int, int, list[float]] | None = None
    prev_end = -1
    for label, score, (start, end) in zip(labels, scores, offsets, strict=True):
        if start == end:  # special token
            continue
        glued = start == prev_end
        prev_end = end
        kind = label[2:] if label[:2] in ("B-", "I-") else label
        if label == "O":
            if cur and glued:  # the rest of a word already in an entity
                cur = (cur[0], cur[1], end, cur[3] + [score])
                continue
            if cur:
                entities.append(_entity(text, cur))
            cur = None
            continue
        if cur and cur[0] == kind and (not label.startswith("B-") or glued):
            cur = (kind, cur[1], end, cur[3] + [score])
        else:
            if cur:
                entities.append(_entity(text, cur))
            cur = (kind, start, end, [score])
    if cur:
        entities.append(_entity(text, cur))
    return entities


def _entity(text: str, cur: tuple[str, int, int, list[float]]) -> Entity:
    kind, start, end, scores = cur
    return Entity(kind, sum(scores) / len(scores), text[start:end], start, end)


class TokenClassificationEngine(_Encoder):
    auto_class = "AutoModelForTokenClassification"

    @torch.inference_mode()
    def entities(self, texts: list[str], priority: int = 0) -> list[list[Entity]]:
        id2label = self.model.config.id2label
        results: list[list[Entity]] = [[] for _ in texts]
        for idx in self._batches(texts):
            batch = [texts[i] for i in idx]
            enc = self._encode(batch, return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping").tolist()
            enc = enc.to(self.device)
            with self._lock.hold(priority):
                probs = self.model(**enc).logits.float().softmax(dim=-1)
            best, ids = probs.max(dim=-1)
            for row, i in enumerate(idx):
                n = int(enc["attention_mask"][row].sum())
                labels = [id2label[int(j)] for j in ids[row, :n]]
                results[i] = group_entities(batch[row], labels, best[row, :n].tolist(),
                                            [tuple(o) for o in offsets[row][:n]])
        return results

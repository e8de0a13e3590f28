"""Fine-tuning: adapt a model folder on plain rows and save a child folder that serves like any other.

- `text-classification`: `{"text", "label"}` rows from an encoder base; a new classification head
  whose labels are the sorted labels of the training rows;
- `text-generation`: supervised fine-tuning on `{"prompt", "answer"}` rows with the chat template
  applied when the tokenizer has one; the loss counts only the answer tokens (and the closing EOS);
- `token-classification`: `{"tokens", "tags"}` rows; each word's tag goes to its first sub-word piece
  (the other pieces and the special tokens are left out of the loss), the tags of the data as labels.

Methods: `lora` (peft; merged into the weights on save, so serving needs nothing special) or `full`.
Linear warmup then linear decay, AdamW, gradient accumulation, a seeded data order (same seed and
data → same weights), checkpoints every N optimizer steps that a rerun resumes from."""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.int8_format import is_stored

TASKS = ("text-classification", "text-generation", "token-classification")
METHODS = ("lora", "full")
IGNORE = -100  # label of the tokens the loss skips


@dataclass(slots=True)
class FinetuneConfig:
    task: str
    method: str = "lora"
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; > 0 overrides epochs
    min_steps: int = 0  # > 0 (and no max_steps): epochs rise until the run makes at least this many steps
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    seed: int = 0
    eval_fraction: float = 0.1  # of the rows, held out when no eval rows are given
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None  # None: peft's defaults for the architecture; "all-linear"
    checkpoint_every: int = 0  # optimizer steps; 0: no checkpoints
    keep_checkpoints: int = 1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_steps", "min_steps", "warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 < self.learning_rate < 1:
            raise ValueError("learning_rate must be between 0 and 1")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction must be in [0, 1)")

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, math.ceil(math.ceil(n_train / self.batch_size) / self.grad_accum))

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps of a run on `n_train` rows: max_steps, else whole epochs, at least enough of
        them for min_steps (a small dataset gets more epochs instead of an undertrained child)."""
        if self.max_steps:
            return self.max_steps
        per_epoch = self.steps_per_epoch(n_train)
        return per_epoch * max(self.epochs, math.ceil(self.min_steps / per_epoch))


@dataclass(slots=True)
class FinetuneResult:
    steps: int
    train_loss: float  # mean over the last epoch's (or last 10 %) optimizer steps
    eval_loss: float | None
    eval_accuracy: float | None  # classifiers only (token classification: over words)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (optimizer step, loss)
    labels: list[str] | None = None  # classifiers: id → label
    merge_max_abs_diff: float | None = None  # LoRA: merged child vs base+adapter on a probe batch
    resumed_from: int = 0  # optimizer step of the checkpoint it resumed from
    eval_loss_before: float | None = None  # the held-out loss of the untouched model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# on_step(step, total_steps, loss, learning_rate); may raise to stop (a cancelled job)
OnStep = Callable[[int, int, float, float], None]


def split(rows: Sequence[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded hold-out: (train, eval); eval gets round(fraction·n) rows, at least one when fraction > 0."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(fraction * len(rows))) if fraction > 0 and len(rows) > 1 else 0
    return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]


def labels_of(rows: Sequence[dict[str, Any]]) -> set[str]:
    """The labels of classification rows, or the tags of NER rows."""
    return {str(t) for r in rows for t in (r["tags"] if "tags" in r else [r["label"]])}


def majority_baseline(train: Sequence[dict[str, Any]], held_out: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The held-out accuracy of always answering the training split's most common label (NER: tag, counted over
    words): what a child must beat to have learnt anything. None without labelled held-out rows."""
    def labels(rows: Sequence[dict[str, Any]]) -> list[str]:
        return [str(t) for r in rows for t in (r["tags"] if "tags" in r else [r["label"]])]

    seen, held = labels(train), labels(held_out)
    if not seen or not held:
        return None
    label = max(sorted(set(seen)), key=seen.count)
    return {"label": label, "accuracy": sum(t == label for t in held) / len(held)}


def missing_labels(train: Sequence[dict[str, Any]], held_out: Sequence[dict[str, Any]]) -> list[str]:
    """Labels of the held-out rows the training rows never show (a classifier could not predict them)."""
    return sorted(labels_of(held_out) - labels_of(train))


def context_length(model_dir: Path) -> int | None:
    """The model's context (max_position_embeddings) from its config.json, without loading weights."""
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    value = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    return int(value) if value else None


# --- encoding --------------------------------------------------------------------------------------------
def _encode_sft(tokenizer: Any, row: dict[str, Any], max_length: int, eos_id: int | None) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt (through the chat template when there is one) is context only."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                               add_generation_prompt=True, tokenize=False)
    else:
        prompt = row["prompt"] + "\n"
    answer = row["answer"] if isinstance(row["answer"], str) else row["answer"][0]
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + ([eos_id] if eos_id is not None else [])
    ids = (p_ids + a_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + a_ids)[:max_length]
    return ids, labels


def _encode_words(tokenizer: Any, row: dict[str, Any], max_length: int,
                  label_ids: dict[str, int]) -> tuple[list[int], list[int]]:
    """(input ids, labels): a word's tag on its first piece, IGNORE on the rest and on special tokens."""
    enc = tokenizer(row["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
    labels, previous = [], None
    for word in enc.word_ids():
        labels.append(IGNORE if word is None or word == previous else label_ids[str(row["tags"][word])])
        previous = word
    return enc["input_ids"], labels


def encode(tokenizer: Any, rows: Sequence[dict[str, Any]], config: FinetuneConfig,
           label_ids: dict[str, int] | None, eos_id: int | None) -> list[tuple[list[int], Any]]:
    if config.task == "text-generation":
        return [_encode_sft(tokenizer, r, config.max_length, eos_id) for r in rows]
    assert label_ids is not None
    if config.task == "token-classification":
        return [_encode_words(tokenizer, r, config.max_length, label_ids) for r in rows]
    return [(tokenizer(r["text"], truncation=True, max_length=config.max_length)["input_ids"],
             label_ids[str(r["label"])]) for r in rows]


def _collate(batch: list[tuple[list[int], Any]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (row, _) in enumerate(batch):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if isinstance(batch[0][1], list):  # SFT: per-token labels, padding ignored
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        for i, (_, row_labels) in enumerate(batch):
            labels[i, :len(row_labels)] = torch.tensor(row_labels)
        out["labels"] = labels
    else:
        out["labels"] = torch.tensor([label for _, label in batch])
    return out


def sft_loss(logits: Any, labels: Any) -> Any:
    """Mean cross-entropy of each next token over the positions whose label is not IGNORE.
    logits: [B, S, V]; labels: [B, S] aligned with the inputs (shifted here)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def _loss(model: Any, batch: dict[str, Any], task: str) -> tuple[Any, Any]:
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if task == "text-generation":
        return sft_loss(logits, batch["labels"]), logits
    if task == "token-classification":  # logits: [B, S, L], labels: [B, S]
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE), logits
    return F.cross_entropy(logits.float(), batch["labels"]), logits


# --- training --------------------------------------------------------------------------------------------
def _load(base_dir: Path, config: FinetuneConfig, labels: list[str] | None) -> tuple[Any, Any]:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    torch.manual_seed(config.seed)  # the new head's initial weights
    if config.task == "text-generation":
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    else:
        assert labels is not None
        auto = AutoModelForTokenClassification if config.task == "token-classification" else AutoModelForSequenceClassification
        model = auto.from_pretrained(
            str(base_dir), dtype=torch.float32, num_labels=len(labels), ignore_mismatched_sizes=True,
            id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    if config.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        task_type = {"text-generation": TaskType.CAUSAL_LM, "text-classification": TaskType.SEQ_CLS,
                     "token-classification": TaskType.TOKEN_CLS}[config.task]
        model = get_peft_model(model, LoraConfig(
            task_type=task_type, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=config.target_modules))
    return model, tokenizer


def _batches(n: int, config: FinetuneConfig, epoch: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    return [order[i:i + config.batch_size] for i in range(0, n, config.batch_size)]


def _checkpoints(directory: Path | None) -> list[Path]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(directory.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def _save_checkpoint(directory: Path, model: Any, optimizer: Any, scheduler: Any, step: int, keep: int,
                     losses: list[tuple[int, float]]) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "rng": torch.get_rng_state(), "losses": [[s, v] for s, v in losses],
             "trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    tmp = directory / f".step-{step}.tmp"
    torch.save(state, tmp)
    tmp.rename(directory / f"step-{step}.pt")
    for old in _checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)


def _resume(directory: Path | None, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, list[tuple[int, float]]]:
    """(the step of the last checkpoint, the losses up to it), the state restored; (0, []) without one."""
    import torch

    found = _checkpoints(directory)
    if not found:
        return 0, []
    state = torch.load(found[-1], weights_only=True)  # our own file, still no pickled code
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), [(int(s), float(v)) for s, v in state.get("losses", [])]


def _evaluate(model: Any, data: list[tuple[list[int], Any]], config: FinetuneConfig, pad_id: int) -> tuple[float, float | None]:
    import torch

    model.eval()
    total, weight, correct = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(data), config.batch_size):
            batch = _collate(data[i:i + config.batch_size], pad_id)
            loss, logits = _loss(model, batch, config.task)
            if config.task == "text-generation":
                n = int((batch["labels"][:, 1:] != IGNORE).sum())
            elif config.task == "token-classification":
                scored = batch["labels"] != IGNORE
                n = int(scored.sum())
                correct += int(((logits.argmax(-1) == batch["labels"]) & scored).sum())
            else:
                n = len(batch["labels"])
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += float(loss) * n
            weight += n
    model.train()
    accuracy = {"text-classification": correct / max(len(data), 1),
                "token-classification": correct / max(weight, 1)}.get(config.task)
    return total / max(weight, 1), accuracy


def finetune(base_dir: Path, out_dir: Path, rows: Sequence[dict[str, Any]], config: FinetuneConfig, *,
             eval_rows: Sequence[dict[str, Any]] | None = None, checkpoint_dir: Path | None = None,
             on_step: OnStep | None = None, adapter_dir: Path | None = None) -> FinetuneResult:
    """Train on `rows` (eval on `eval_rows`, else a seeded `eval_fraction` hold-out) and save the child
    (weights merged, tokenizer beside) to `out_dir`. With `checkpoint_dir`, resumes from its last checkpoint;
    with `adapter_dir`, LoRA also keeps the unmerged adapter there (peft's format)."""
    import torch

    if stored := is_stored(base_dir):
        raise ValueError(f"{base_dir} is stored as {stored}; fine-tune its float parent instead")
    if eval_rows is None:
        train_rows, held_out = split(rows, config.eval_fraction, config.seed)
    else:
        train_rows, held_out = list(rows), list(eval_rows)
    if not train_rows:
        raise ValueError("no training rows")
    labels = sorted(labels_of(train_rows)) if config.task != "text-generation" else None
    if labels is not None and (missing := missing_labels(train_rows, held_out)):
        raise ValueError(f"labels in the eval split that training never shows: {', '.join(missing)}")
    torch.manual_seed(config.seed)
    model, tokenizer = _load(Path(base_dir), config, labels)
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_id or 0)
    label_ids = {label: i for i, label in enumerate(labels)} if labels else None
    train = encode(tokenizer, train_rows, config, label_ids, eos_id)
    held = encode(tokenizer, held_out, config, label_ids, eos_id)

    per_epoch = config.steps_per_epoch(len(train))
    total = config.total_steps(len(train))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    warmup = min(config.warmup_steps, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (
        (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))))
    eval_loss_before = _evaluate(model, held, config, pad_id)[0] if held else None
    resumed, losses = _resume(checkpoint_dir, model, optimizer, scheduler)  # losses: the run's, from step 1
    step = resumed

    model.train()
    micro = 0  # micro-batches seen, counted from the start (so a resume skips what was done)
    epoch = 0
    window: list[float] = []
    while step < total:
        for batch_idx in _batches(len(train), config, epoch):
            micro += 1
            if micro <= resumed * config.grad_accum:
                continue
            batch = _collate([train[i] for i in batch_idx], pad_id)
            loss, _ = _loss(model, batch, config.task)
            (loss / config.grad_accum).backward()
            window.append(float(loss.detach()))
            if micro % config.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append((step, sum(window) / len(window)))
            window = []
            if checkpoint_dir is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
                _save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step, config.keep_checkpoints,
                                 losses)
            if on_step is not None:
                on_step(step, total, losses[-1][1], lr)
            if step >= total:
                break
        epoch += 1

    tail = losses[-max(1, min(per_epoch, len(losses))):]
    train_loss = sum(v for _, v in tail) / len(tail) if tail else float("nan")
    eval_loss, accuracy = _evaluate(model, held, config, pad_id) if held else (None, None)

    probe = _collate((held or train)[:4], pad_id)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    if config.method == "lora":
        if adapter_dir is not None:
            model.save_pretrained(str(adapter_dir))
        model = model.merge_and_unload()
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    merge_diff = None
    if config.method == "lora":
        with torch.no_grad():
            after = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
        merge_diff = float((after - before).abs().max())
    return FinetuneResult(steps=step, train_loss=train_loss, eval_loss=eval_loss, eval_accuracy=accuracy,
                          losses=losses, labels=labels, merge_max_abs_diff=merge_diff, resumed_from=resumed,
                          eval_loss_before=eval_loss_before)

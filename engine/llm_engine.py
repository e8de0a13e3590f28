"""The causal-LM engine: `step()` = schedule → run → postprocess, driven by a background thread
so that every caller's request joins the same running batch."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import admission, loader, quantize, sampler
from engine.config import EngineConfig, SamplingParams
from engine.detokenizer import Detokenizer
from engine.errors import EngineClosed
from engine.int8_format import is_stored
from engine.outputs import Completion, Delta, RequestHandle, TokenLogprob, Usage
from engine.runner import ModelRunner, StepInterrupted, build_stack
from engine.scheduler import Batch, Scheduler
from engine.sequence import FinishReason, Sequence

MAX_CONTEXT_DEFAULT = 8192
try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _CLOCK_TICKS = 100


@dataclass(slots=True)
class EngineStats:
    running: int
    waiting: int
    batch_size: int  # sequences in the last step
    kv_blocks_used: int
    kv_blocks_total: int
    kv_cache_usage: float  # 0..1
    tokens_per_s: float  # generated tokens per second over the last few seconds
    generated_tokens: int  # since start
    steps: int
    progress: int  # moves whenever the runtime computes (torch: prompt and generated tokens run); the wedge check's clock
    preemptions: int  # sequences sent back to wait (their blocks freed, recomputed later) since start
    peak_batch_size: int
    interrupted_steps: int = 0  # background steps stopped between layers for an interactive arrival
    cpu_s: float | None = None  # CPU time the engine's loop thread used since start (None: unknown); a step that
    # runs long under load still uses CPU, a wedged one does not (workers/serving/replica.py's ProgressWatch)


@dataclass(slots=True)
class _State:
    handle: RequestHandle
    detok: Detokenizer
    generator: torch.Generator | None
    logprobs: list[TokenLogprob]


class LLMEngine:
    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig, *, device: str, dtype: str,
                 stack: torch.nn.Module | None = None):
        self.config, self.tokenizer, self.device = config, tokenizer, torch.device(device)
        self.model = model
        self.stack = stack if stack is not None else build_stack(model)
        if config.quantization != "none" and (stack is None or self.device.type != "cpu"):
            quantize.quantize_stack(self.stack, config.quantization, tokenizer=tokenizer, device=self.device)
        torch_dtype = loader.torch_dtype(dtype)
        per_token = ModelRunner.bytes_per_token(self.stack, torch_dtype)
        num_blocks = config.kv_cache_bytes // (per_token * config.block_size)
        mc = model.config
        model_len = getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", MAX_CONTEXT_DEFAULT)
        # the usable context: what the model takes, and what the whole cache holds for one sequence
        self.cache_tokens = num_blocks * config.block_size
        self.model_len = config.max_model_len or min(model_len, MAX_CONTEXT_DEFAULT)  # the model's own window
        self.max_model_len = min(self.model_len, self.cache_tokens)  # ... as generation can use it
        self.vocab_size = _vocab_size(model)
        loader.release_memory()  # the unfused copies of q/k/v and gate/up are gone
        self.runner = ModelRunner(self.stack, num_blocks=num_blocks, block_size=config.block_size,
                                  device=self.device, dtype=torch_dtype)
        self.scheduler = Scheduler(max_num_seqs=config.max_num_seqs, max_batch_tokens=config.max_batch_tokens,
                                   max_queue=config.max_queue, num_blocks=num_blocks, block_size=config.block_size,
                                   attention_weight=_attention_weight(self.stack, mc))
        self.eos_ids = _eos_ids(model, tokenizer)
        self._lock = threading.RLock()  # re-entrant: a caller holding it may still submit (tests inject faults so)
        self._wake = threading.Event()
        self._cancelled: set[Sequence] = set()
        self._seeds = itertools.count(config.seed)
        self._ids = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_batch = 0
        self._peak_batch = 0
        self._trimmed_at = 0
        self._steps = 0
        self._generated = 0
        self._computed = 0  # tokens run through the model (prefill chunks and decodes): the wedge check's clock
        self._recent: deque[tuple[float, int]] = deque()
        self._urgent = threading.Event()  # an interactive request arrived: a background step in flight stops
        self._interrupted = 0

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: EngineConfig | None = None) -> LLMEngine:
        config = config or EngineConfig()
        device = config.resolved_device()
        dtype = config.resolved_dtype(device)
        stored = is_stored(Path(folder))
        if stored:  # a compressed child: its int8 layers load as they are
            if device == "cpu" and config.quantization not in ("none", stored):
                raise ValueError(f"this version is stored as {stored}; serve it with quantization 'none' "
                                 f"(or {stored!r}), or quantize its float parent instead")
            loader.read_config(Path(folder))
            model, stack = quantize.load_quantized(Path(folder), device=torch.device(device),
                                                   dtype=loader.torch_dtype(dtype))
            return cls(model, loader.load_tokenizer(Path(folder)), config, device=device, dtype=dtype, stack=stack)
        model = loader.load_model(Path(folder), "AutoModelForCausalLM", device=device, dtype=dtype,
                                  attn_implementation="sdpa")
        return cls(model, loader.load_tokenizer(Path(folder)), config, device=device, dtype=dtype)

    # -- submitting --
    def encode(self, prompt: str | list[dict[str, str]] | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        if prompt and all(isinstance(t, int) for t in prompt):
            return list(prompt)  # type: ignore[arg-type]
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead of messages")
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompt: str | list[dict[str, str]] | list[int],
                 params: SamplingParams | None = None) -> RequestHandle:
        """Queue a generation and return its handle at once. Raises `Overloaded` when the queue is
        full, `PromptTooLong` when prompt and answer cannot fit the context, `InvalidPrompt` for token
        ids outside the vocabulary."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        params = admission.admit(ids, params, vocab_size=self.vocab_size, limit=self.max_model_len,
                                 cache_limited=self.max_model_len == self.cache_tokens)
        seq = Sequence(ids, params)
        handle = RequestHandle(f"req-{next(self._ids)}", lambda: self.cancel(seq))
        seed = params.seed if params.seed is not None else next(self._seeds)
        gen = None if params.greedy else sampler.make_generator(seed, self.device)
        seq.state = _State(handle, Detokenizer(self.tokenizer, ids, params.stop), gen, [])
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            self.scheduler.add(seq)
            if params.priority == 0:
                self._urgent.set()
        self._ensure_loop()
        self._wake.set()
        return handle

    def limit_seqs(self, n: int) -> None:
        """Run at most `n` sequences per step (adaptive admission narrows and widens it)."""
        with self._lock:
            self.scheduler.max_num_seqs = max(1, n)
        self._wake.set()

    def cancel(self, seq: Sequence) -> None:
        with self._lock:
            seq.cancel_requested = True
            self._cancelled.add(seq)
        self._wake.set()

    # -- the loop --
    def step(self) -> int:
        """One scheduling step; returns how many sequences it advanced. A fault confined to one sequence
        (its forward row, its sampling, its stop strings or detokenizing) fails that sequence alone."""
        with self._lock:
            self._reap_cancelled()
            self._urgent.clear()  # arrivals until now are in this step's schedule
            batch = self.scheduler.schedule()
        if batch is None:
            return 0
        failed: dict[Sequence, BaseException] = {}
        ends = [s for s, done in zip(batch.seqs, batch.completes(), strict=True) if done]
        # a step of background work alone stops between layers when an interactive request arrives: the
        # next step prefills it alone (the scheduler's focus) instead of after this whole step
        background = all(s.params.priority > 0 for s in batch.seqs)
        try:
            logits, ends = self._forward(batch, ends, failed, self._urgent.is_set if background else None)
        except StepInterrupted:
            with self._lock:
                self._interrupted += 1
            return 0
        samples = self._sample(logits, ends, failed)
        with self._lock:
            for seq, n in zip(batch.seqs, batch.num_new, strict=True):
                if seq in failed or seq.is_finished:
                    continue
                seq.num_computed += n
                smp = samples.get(seq)
                if smp is None:
                    continue  # a prefill chunk that did not reach the prompt's end
                try:
                    self._postprocess(seq, smp)
                except Exception as exc:  # noqa: BLE001 - this sequence's fault, not the batch's
                    failed[seq] = exc
            for seq, exc in failed.items():
                if not seq.is_finished:
                    self.scheduler.finish(seq, FinishReason.CANCELLED)
                seq.state.handle._finish(None, exc)
            self._last_batch = len(batch.seqs)
            self._peak_batch = max(self._peak_batch, len(batch.seqs))
            self._steps += 1
            self._computed += batch.num_tokens
            now = time.perf_counter()
            self._generated += len(samples)
            self._recent.append((now, len(samples)))
            while self._recent and now - self._recent[0][0] > 5.0:
                self._recent.popleft()
        return len(batch.seqs)

    def _forward(self, batch: Batch, ends: list[Sequence], failed: dict[Sequence, BaseException],
                 interrupt: Callable[[], bool] | None = None) -> tuple[torch.Tensor | None, list[Sequence]]:
        """Logits for `ends` (the sequences that complete this step), and the sequences they belong to. If
        the shared forward fails, each sequence runs alone, so that only the one at fault fails (its cache
        slots are simply written again). `StepInterrupted` (see `ModelRunner.forward`) passes through."""
        try:
            return self.runner.forward(batch.seqs, batch.num_new, interrupt), ends
        except StepInterrupted:
            raise
        except Exception as exc:  # noqa: BLE001
            if len(batch.seqs) == 1:
                failed[batch.seqs[0]] = exc
                return None, []
        rows, owners = [], []
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            try:
                logits = self.runner.forward([seq], [n])
            except Exception as exc:  # noqa: BLE001
                failed[seq] = exc
                continue
            if seq in ends:
                rows.append(logits)
                owners.append(seq)
        return (torch.cat(rows) if rows else None), owners

    def _sample(self, logits: torch.Tensor | None, seqs: list[Sequence],
                failed: dict[Sequence, BaseException]) -> dict[Sequence, sampler.Sample]:
        """Next tokens for `seqs` (one logits row each); a sampling fault fails its row alone."""
        if logits is None or not seqs:
            return {}
        try:
            return dict(zip(seqs, sampler.sample(logits, seqs, [s.state.generator for s in seqs]), strict=True))
        except Exception:  # noqa: BLE001 - find the row at fault
            out = {}
            for r, seq in enumerate(seqs):
                try:
                    out[seq] = sampler.sample(logits[r:r + 1], [seq], [seq.state.generator])[0]
                except Exception as exc:  # noqa: BLE001
                    failed[seq] = exc
            return out

    def _reap_cancelled(self) -> None:
        for seq in self._cancelled:
            if not seq.is_finished:
                self.scheduler.finish(seq, FinishReason.CANCELLED)
                self._complete(seq, seq.state.detok.finish())
        self._cancelled.clear()

    def _postprocess(self, seq: Sequence, smp: sampler.Sample) -> None:
        st: _State = seq.state
        seq.append_token(smp.token_id)
        p = seq.params
        reason: FinishReason | None = None
        text = ""
        tok = smp.token_id
        if (tok in self.eos_ids and not p.ignore_eos) or tok in p.stop_token_ids:
            reason = FinishReason.STOP
        else:
            text = st.detok.add(tok)
            if st.detok.stopped:
                reason = FinishReason.STOP
        if reason is None and (seq.num_output_tokens >= p.max_new_tokens or len(seq) >= self.max_model_len):
            reason = FinishReason.LENGTH
        lps: list[TokenLogprob] = []
        if smp.logprob is not None:
            lps = [TokenLogprob(tok, self._token_text(tok), smp.logprob,
                                [(t, self._token_text(t), lp) for t, lp in smp.top])]
            st.logprobs.extend(lps)
        if reason is not None:
            text += st.detok.finish()
            self.scheduler.finish(seq, reason)
        if text or lps or reason is None:
            st.handle._emit(Delta(text, [tok], lps))
        if reason is not None:
            self._complete(seq, "")

    def _complete(self, seq: Sequence, tail: str) -> None:
        st: _State = seq.state
        if tail:
            st.handle._emit(Delta(tail, [], []))
        now = time.perf_counter()
        ttft = seq.first_token_time - seq.arrival_time if seq.first_token_time else None
        st.handle._finish(Completion(
            request_id=st.handle.request_id, text=st.detok.text, token_ids=seq.output_token_ids,
            finish_reason=seq.finish_reason.value if seq.finish_reason else "cancelled",
            usage=Usage(seq.num_prompt_tokens, seq.num_output_tokens), ttft_s=ttft,
            total_s=now - seq.arrival_time, logprobs=st.logprobs))

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _ensure_loop(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tauon-engine", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                idle = not self.scheduler.has_work() and not self._cancelled
            if idle:
                if self._steps != self._trimmed_at:  # the batch drained: hand transient memory back
                    self._trimmed_at = self._steps
                    loader.release_memory()
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            self.step()

    def close(self) -> None:
        """Stop the loop; requests still in flight finish as cancelled."""
        with self._lock:
            self._closed = True
            for seq in list(self.scheduler.running) + list(self.scheduler.waiting):
                self._cancelled.add(seq)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            self._reap_cancelled()

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> EngineStats:
        with self._lock:
            bm = self.scheduler.block_manager
            span = (self._recent[-1][0] - self._recent[0][0]) if len(self._recent) > 1 else 0.0
            tps = sum(n for _, n in list(self._recent)[1:]) / span if span > 0 else 0.0
            return EngineStats(running=len(self.scheduler.running), waiting=len(self.scheduler.waiting),
                               batch_size=self._last_batch, kv_blocks_used=bm.num_used, kv_blocks_total=bm.num_blocks,
                               kv_cache_usage=bm.num_used / bm.num_blocks, tokens_per_s=tps,
                               generated_tokens=self._generated, steps=self._steps,
                               progress=self._computed, preemptions=self.scheduler.num_preemptions,
                               peak_batch_size=self._peak_batch, interrupted_steps=self._interrupted,
                               cpu_s=thread_cpu_s(self._thread))


def thread_cpu_s(thread: threading.Thread | None) -> float | None:
    """CPU seconds (user + system) a live thread of this process has used, from Linux's /proc; None elsewhere
    or when it is not running."""
    tid = getattr(thread, "native_id", None)
    if tid is None or not thread.is_alive():  # type: ignore[union-attr]
        return None
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state is field 3, utime 14, stime 15
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def _vocab_size(model: Any) -> int:
    """Rows of the input embedding: the ids the model can take (a tokenizer may know more)."""
    try:
        return int(model.get_input_embeddings().num_embeddings)
    except (AttributeError, TypeError, NotImplementedError):
        return int(model.config.vocab_size)


def _attention_weight(stack: torch.nn.Module, config: Any) -> float:
    """What attending to one cached key costs a new token, relative to the token's own matmuls: 2·H·D
    multiply-adds per layer (scores and values) against one per weight, so a chunk of a long prompt
    counts for more of the step's token budget. Weights are counted from the config (a quantized
    stack holds them packed)."""
    H, Hkv, D, L = stack.num_heads, stack.num_kv_heads, stack.head_dim, len(stack.layers)
    h = getattr(config, "hidden_size", None) or config.n_embd
    inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * h
    mlp = 3 if hasattr(config, "intermediate_size") else 2  # gated (Llama) or not (GPT-2)
    weights = L * (h * D * (2 * H + 2 * Hkv) + mlp * h * inter) + h * config.vocab_size
    return 2 * H * D * L / weights


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids

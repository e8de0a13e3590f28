"""The causal-LM engine: `step()` = schedule → run → postprocess, driven by a background thread
so that every caller's request joins the same running batch."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import loader, quantize, sampler
from engine.config import EngineConfig, SamplingParams
from engine.detokenizer import Detokenizer
from engine.errors import EngineClosed, PromptTooLong
from engine.outputs import Completion, Delta, RequestHandle, TokenLogprob, Usage
from engine.runner import ModelRunner, build_stack
from engine.scheduler import Scheduler
from engine.sequence import FinishReason, Sequence

MAX_CONTEXT_DEFAULT = 8192


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
    peak_batch_size: int


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
        self.max_model_len = config.max_model_len or min(model_len, MAX_CONTEXT_DEFAULT)
        loader.release_memory()  # the unfused copies of q/k/v and gate/up are gone
        self.runner = ModelRunner(self.stack, num_blocks=num_blocks, block_size=config.block_size,
                                  device=self.device, dtype=torch_dtype)
        self.scheduler = Scheduler(max_num_seqs=config.max_num_seqs, max_batch_tokens=config.max_batch_tokens,
                                   max_queue=config.max_queue, num_blocks=num_blocks, block_size=config.block_size)
        self.eos_ids = _eos_ids(model, tokenizer)
        self._lock = threading.Lock()
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
        self._recent: deque[tuple[float, int]] = deque()

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: EngineConfig | None = None) -> LLMEngine:
        config = config or EngineConfig()
        device = config.resolved_device()
        dtype = config.resolved_dtype(device)
        stored = quantize.is_stored(Path(folder))
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
        full and `PromptTooLong` when the prompt cannot fit the context window."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.max_model_len:
            raise PromptTooLong(f"the prompt has {len(ids)} tokens but the context window is {self.max_model_len} "
                                "(including at least one new token); shorten the prompt")
        cache_tokens = self.scheduler.block_manager.num_blocks * self.config.block_size
        if len(ids) + 1 > cache_tokens:
            raise PromptTooLong(f"the prompt has {len(ids)} tokens but the KV cache holds {cache_tokens}; "
                                "shorten the prompt or raise kv_cache_bytes")
        seq = Sequence(ids, params)
        handle = RequestHandle(f"req-{next(self._ids)}", lambda: self.cancel(seq))
        seed = params.seed if params.seed is not None else next(self._seeds)
        gen = None if params.greedy else sampler.make_generator(seed, self.device)
        seq.state = _State(handle, Detokenizer(self.tokenizer, ids, params.stop), gen, [])
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            self.scheduler.add(seq)
        self._ensure_loop()
        self._wake.set()
        return handle

    def cancel(self, seq: Sequence) -> None:
        with self._lock:
            seq.cancel_requested = True
            self._cancelled.add(seq)
        self._wake.set()

    # -- the loop --
    def step(self) -> int:
        """One scheduling step; returns how many sequences it advanced."""
        with self._lock:
            self._reap_cancelled()
            batch = self.scheduler.schedule()
        if batch is None:
            return 0
        try:
            logits = self.runner.prefill(batch.seqs) if batch.is_prefill else self.runner.decode(batch.seqs)
            samples = sampler.sample(logits, batch.seqs, [s.state.generator for s in batch.seqs])
        except Exception as exc:  # a failed forward fails its batch, not the engine
            with self._lock:
                for seq in batch.seqs:
                    self.scheduler.finish(seq, FinishReason.CANCELLED)
                    seq.state.handle._finish(None, exc)
            return 0
        with self._lock:
            for seq, smp in zip(batch.seqs, samples, strict=True):
                self._postprocess(seq, smp)
            self._last_batch = len(batch.seqs)
            self._peak_batch = max(self._peak_batch, len(batch.seqs))
            self._steps += 1
            now = time.perf_counter()
            self._generated += len(batch.seqs)
            self._recent.append((now, len(batch.seqs)))
            while self._recent and now - self._recent[0][0] > 5.0:
                self._recent.popleft()
        return len(batch.seqs)

    def _reap_cancelled(self) -> None:
        for seq in self._cancelled:
            if not seq.is_finished:
                self.scheduler.finish(seq, FinishReason.CANCELLED)
                self._complete(seq, seq.state.detok.finish())
        self._cancelled.clear()

    def _postprocess(self, seq: Sequence, smp: sampler.Sample) -> None:
        st: _State = seq.state
        seq.num_computed = len(seq)
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
                               peak_batch_size=self._peak_batch)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids

"""The `llamacpp` runtime: a version's GGUF file served by llama.cpp's own server loop (the xllamacpp
wheel), behind the same contract as the torch engine: `generate` → `RequestHandle`, `encode`,
`tokenizer`, `eos_ids`, `stats()`, `close()`.

llama.cpp batches continuously across `max_num_seqs` parallel slots that share one KV cache. Each
request is one blocking streamed completion on its own thread (xllamacpp releases the GIL while it
waits); its callback turns llama.cpp's chunks into `Delta`s and answers True to stop a cancelled one.
llama.cpp has no priorities, so requests wait for their turn here before they reach it: at most
`max_active` at once (the slots; adaptive admission narrows it with `limit_seqs`), interactive ones first,
oldest first. Background requests (batch lines) never take the slots `admission.background_reserve`
keeps for interactive arrivals, at most `BACKGROUND_PREFILLS` of them are before their first token at
once, and none starts while an interactive request waits for its turn or its first token.
Prompts go in as token ids built by the version's Hugging Face tokenizer (the chat template applied
exactly as the torch engine applies it), so both runtimes see the same prompt, token for token.

Imports neither torch nor Django; xllamacpp is imported when an engine is built."""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import admission, loader
from engine.config import EngineConfig, SamplingParams
from engine.errors import EngineClosed, EngineError, Overloaded, PromptTooLong, UnsupportedModel
from engine.inspect import GGUF_NAME, InvalidModel, read_gguf
from engine.outputs import Completion, Delta, RequestHandle, TokenLogprob, Usage

log = logging.getLogger(__name__)
RUNTIME = "llamacpp"
MAX_CONTEXT_DEFAULT = 8192
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
# Background requests (priority > 0) before their first token at once: llama.cpp computes every slot's
# prompt in the same batch, so this bounds the background prefill an interactive prompt shares a step with.
BACKGROUND_PREFILLS = 2


def gguf_of(folder: Path) -> Path | None:
    """The version's original GGUF file, kept beside its safetensors conversion; None when it has none."""
    path = Path(folder) / GGUF_NAME
    return path if path.is_file() else None


def supported_architectures() -> frozenset[str]:
    """The GGUF `general.architecture` names llama.cpp knows (the gguf package is llama.cpp's own gguf-py)."""
    from gguf.constants import MODEL_ARCH_NAMES

    return frozenset(MODEL_ARCH_NAMES.values())


def check_runnable(gguf_path: Path) -> str:
    """The file's architecture, after checking its header (tensors inside the file) and that llama.cpp
    knows the architecture; raises UnsupportedModel saying which check failed."""
    try:
        info = read_gguf(gguf_path)
    except InvalidModel as exc:
        raise UnsupportedModel(f"llama.cpp cannot load this GGUF: {exc}") from exc
    if info.architecture not in supported_architectures():
        raise UnsupportedModel(f"llama.cpp does not run the architecture '{info.architecture or '(none)'}'; "
                               "serve this version with runtime 'torch' (or 'auto')")
    return info.architecture


def cpu_share() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0))
    quota = _cgroup_cpus()
    return max(1, min(n, quota) if quota else n)


def _cgroup_cpus() -> int | None:
    """The whole CPUs a cgroup v2 quota allows (None without a quota)."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return max(1, int(quota) // int(period)) if quota != "max" else None
    except (OSError, ValueError):
        return None


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once), capped by a
    cgroup v2 CPU quota."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:  # no topology (some containers): each CPU its own core
            cores.add(("cpu", str(cpu)))
    quota = _cgroup_cpus()
    return max(1, min(len(cores), quota) if quota else len(cores))


def default_threads() -> int:
    """llama.cpp's CPU threads when `engine.threads` is 0: the physical cores this worker may use, less
    one (at least one). llama.cpp's threads meet at a barrier after every operation of every step, spin-
    waiting for each other, so a thread that the OS takes off its core stalls the whole step; and a
    serving worker never has the CPU to itself: its own Python threads turn every token into a Redis
    event, and under `make up` the web process, Redis and the jobs worker share the box. The core left
    free keeps them off llama.cpp's threads. Decoding is memory-bound, so on larger machines the core
    costs little; on the 2-core box it is the difference between 1 thread at 53–62 tok/s and 2 threads
    collapsing to 5–22 tok/s whenever the box is shared (bench/README.md). SMT siblings are not counted:
    two llama.cpp threads on one core's siblings compete for the same units (llama.cpp's own advice)."""
    return max(1, physical_cores() - 1)


def gpu_layers(device: str, n_layers: int) -> int:
    """Layers llama.cpp offloads: every layer (and the output layer) when this xllamacpp build sees a GPU
    (a CUDA or Metal wheel on a machine with one) and `device` is not `cpu`; else 0. `device` `cuda`
    without a GPU that llama.cpp can use raises UnsupportedModel saying so. (Untested here: no GPU.)"""
    if device == "cpu":
        return 0
    import xllamacpp

    try:
        devices = xllamacpp.get_device_info()
    except Exception:  # noqa: BLE001 - an older wheel without device info: stay on the CPU
        devices = []
    kinds = {str(getattr(d.get("type"), "name", d.get("type"))) for d in devices if isinstance(d, dict)}
    if any(k.endswith(("_GPU", "_IGPU")) for k in kinds):
        return n_layers + 1
    if device == "cuda":
        raise UnsupportedModel("engine.device is 'cuda' but llama.cpp sees no GPU (this xllamacpp wheel is built "
                               "for the CPU only, or no GPU is visible); install xllamacpp's CUDA wheel, or use "
                               "device 'auto' or 'cpu'")
    return 0


def encode(tokenizer: Any, prompt: str | list[dict[str, str]] | list[int]) -> list[int]:
    """Token ids of a plain prompt, chat messages (the chat template with the generation prompt) or ids."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)  # type: ignore[arg-type]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead of messages")
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_ids(folder: Path, tokenizer: Any) -> set[int]:
    """The ids that end an answer: the tokenizer's EOS and those of generation_config.json / config.json."""
    ids: set[int] = set()
    values = [getattr(tokenizer, "eos_token_id", None)]
    values += [_json(Path(folder) / name).get("eos_token_id") for name in ("generation_config.json", "config.json")]
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _decode_calls(metrics: str) -> int:
    """llama.cpp's count of llama_decode() calls, from its Prometheus text (0 if absent)."""
    found = re.search(r"^llamacpp:n_decode_total (\d+)", metrics, re.M)
    return int(found.group(1)) if found else 0


def _json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def request_body(ids: list[int], params: SamplingParams, seed: int) -> dict[str, Any]:
    """llama.cpp's /v1/completions body for these params; raises ValueError naming a field it cannot honour."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(params, name) != 0.0:
            raise ValueError(f"{name} is not supported by the llamacpp runtime (llama.cpp counts the prompt's "
                             f"tokens too, unlike OpenAI); leave it at 0 or serve this deployment with runtime "
                             f"'torch'")
    return {
        "prompt": ids, "stream": True, "max_tokens": params.max_new_tokens,
        "temperature": params.temperature, "top_p": params.top_p,
        "top_k": 1 if params.greedy else params.top_k,  # greedy: the same token without sorting the vocabulary
        "min_p": 0.0, "typical_p": 1.0,  # llama.cpp's own defaults (min_p 0.05) would cut what ours keep
        "repeat_penalty": params.repetition_penalty,  # over the whole context (prompt too), as Hugging Face's
        "repeat_last_n": len(ids) + params.max_new_tokens if params.repetition_penalty != 1.0 else 0,
        "stop": list(params.stop), "ignore_eos": params.ignore_eos, "seed": seed,
        "logprobs": max(1, params.top_logprobs),  # at least 1: each chunk then names its token ids
        # without logprobs asked, the ids come from the sampler's own short candidate list instead of a
        # softmax and sort over the whole vocabulary for every token
        "post_sampling_probs": not params.logprobs,
        "cache_prompt": True,
    }


@dataclass(slots=True)
class _Request:
    handle: RequestHandle
    params: SamplingParams
    prompt_tokens: int
    submitted: float
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    first_token: float | None = None
    usage: Usage | None = None
    cancelled: bool = False
    finished: bool = False
    started: bool = False  # handed to llama.cpp (background requests wait for their turn first)


class LlamaCppEngine:
    runtime = RUNTIME
    runtime_note = ""

    def __init__(self, folder: str | Path, config: EngineConfig | None = None, *, gguf_path: Path | None = None):
        import xllamacpp

        self.folder = Path(folder)
        self.config = config = config or EngineConfig()
        self.gguf_path = gguf_path or gguf_of(self.folder)
        if self.gguf_path is None:
            raise UnsupportedModel(f"this version has no GGUF file ({GGUF_NAME}); the llamacpp runtime serves GGUF "
                                   "versions only; serve it with runtime 'torch' (or 'auto')")
        self.architecture = check_runnable(self.gguf_path)
        hf = loader.read_config(self.folder)
        self.tokenizer = loader.load_tokenizer(self.folder)
        self.eos_ids = eos_ids(self.folder, self.tokenizer)
        per_token = self._kv_bytes_per_token(hf)
        model_len = config.max_model_len or min(int(hf.get("max_position_embeddings") or MAX_CONTEXT_DEFAULT),
                                                MAX_CONTEXT_DEFAULT)
        self.n_ctx = max(256, min(config.kv_cache_bytes // per_token, model_len * config.max_num_seqs))
        self.max_model_len = min(model_len, self.n_ctx)
        self.vocab_size = int(hf.get("vocab_size") or len(self.tokenizer))
        self.threads = config.threads or default_threads()
        self.gpu_layers = gpu_layers(config.device, int(hf.get("num_hidden_layers") or hf.get("n_layer") or 0))
        p = xllamacpp.CommonParams()
        p.model.path = str(self.gguf_path)
        p.n_parallel = config.max_num_seqs
        p.n_ctx = self.n_ctx
        p.kv_unified = True  # every slot draws on one cache of n_ctx tokens, like the torch engine's blocks
        p.n_batch = p.n_ubatch = max(32, min(config.max_batch_tokens, 2048))
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = self.threads
        p.n_gpu_layers = self.gpu_layers
        p.warmup = True
        p.verbosity = -1
        p.endpoint_metrics = True
        # xllamacpp also opens llama.cpp's HTTP server on a loopback port; lock it with a key nobody has
        # (this class calls the routes directly, which the key does not guard)
        p.api_keys = [secrets.token_urlsafe(32)]
        try:
            with _keep_signal_handlers():  # llama.cpp installs its own SIGINT/SIGTERM handlers
                self._server = xllamacpp.Server(p)
        except RuntimeError as exc:
            raise UnsupportedModel(f"llama.cpp could not load {self.gguf_path.name} ({self.architecture}): {exc}") from exc
        # one round trip through llama.cpp's task queue: its loop has started, so a close() from now on
        # is seen (a terminate that comes before the loop starts is lost, and the close would hang)
        self._server.handle_metrics()
        self._lock = threading.Lock()
        self._turns = threading.Condition(self._lock)  # requests wait on it for their turn
        self.max_active = config.max_num_seqs  # requests in llama.cpp at once
        self._requests: dict[str, _Request] = {}
        self._threads: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._seeds = itertools.count(config.seed)
        self._closed = False
        self._chunks = 0
        self._generated = 0
        self._peak = 0
        self._recent: deque[tuple[float, int]] = deque()

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: EngineConfig | None = None) -> LlamaCppEngine:
        return cls(folder, config)

    @staticmethod
    def _kv_bytes_per_token(hf: dict[str, Any]) -> int:
        layers = int(hf.get("num_hidden_layers") or hf.get("n_layer") or 1)
        heads = int(hf.get("num_attention_heads") or 1)
        kv_heads = int(hf.get("num_key_value_heads") or heads)
        head_dim = int(hf.get("head_dim") or int(hf.get("hidden_size") or 64) // heads)
        return max(1, 2 * layers * kv_heads * head_dim * KV_BYTES_PER_VALUE)

    # -- submitting --
    def encode(self, prompt: str | list[dict[str, str]] | list[int]) -> list[int]:
        return encode(self.tokenizer, prompt)

    def generate(self, prompt: str | list[dict[str, str]] | list[int],
                 params: SamplingParams | None = None) -> RequestHandle:
        """Start a generation and return its handle at once (Overloaded when the queue is full,
        PromptTooLong when the prompt cannot fit, ValueError for a field llama.cpp cannot honour)."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        params = admission.admit(ids, params, vocab_size=self.vocab_size, limit=self.max_model_len,
                                 cache_limited=self.max_model_len == self.n_ctx)
        body = request_body(ids, params, params.seed if params.seed is not None else next(self._seeds))
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is shut down")
            if len(self._requests) >= self.config.max_num_seqs + self.config.max_queue:
                raise Overloaded(f"{len(self._requests)} requests are in flight on this replica")
            rid = f"req-{next(self._ids)}"
            handle = RequestHandle(rid, lambda: self._cancel(rid))
            req = self._requests[rid] = _Request(handle, params, len(ids), time.perf_counter())
            thread = threading.Thread(target=self._serve, args=(rid, req, body), name=f"llamacpp-{rid}", daemon=True)
            self._threads.add(thread)
        thread.start()
        return handle

    def _serve(self, rid: str, req: _Request, body: dict[str, Any]) -> None:
        error: BaseException | None = None
        reason = "length"

        def on_chunk(chunk: Any) -> bool:
            nonlocal reason
            if req.cancelled:
                return True
            if isinstance(chunk, dict) and "error" in chunk:
                raise _Failed(chunk["error"])
            stop = self._take(req, chunk)
            if stop is not None:
                reason = stop
            return stop == "stop_token"

        try:
            if not self._wait_turn(req):
                return
            self._server.handle_completions(body, _guarded(on_chunk))
            failure = getattr(on_chunk, "failure", None)
            if failure is not None:
                raise failure
        except _Failed as exc:
            error = _error_of(exc.error)
        except Exception as exc:  # noqa: BLE001 - a failed request fails its handle, not the engine
            error = exc
        finally:
            self._finish(rid, req, "stop" if reason == "stop_token" else reason, error)

    def limit_seqs(self, n: int) -> None:
        """Hand llama.cpp at most `n` requests at once (at most its slots); the rest wait their turn here."""
        with self._turns:
            self.max_active = max(1, min(n, self.config.max_num_seqs))
            self._turns.notify_all()

    def _wait_turn(self, req: _Request) -> bool:
        """Block a request until it may reach llama.cpp; False: cancelled (or closed) first."""
        with self._turns:
            while not (req.started or req.cancelled or self._closed):
                if self._may_start(req):
                    req.started = True
                    self._turns.notify_all()  # the next in line may go too
                else:
                    self._turns.wait(0.5)
            return req.started and not req.cancelled

    def _may_start(self, req: _Request) -> bool:  # under self._lock
        live = list(self._requests.values())
        started = [r for r in live if r.started]
        if len(started) >= self.max_active:
            return False
        ahead = [r for r in live if not r.started and not r.cancelled
                 and (r.params.priority, r.submitted) < (req.params.priority, req.submitted)]
        if ahead:
            return False  # interactive first, then oldest first
        if req.params.priority == 0:
            return True
        background = [r for r in started if r.params.priority > 0]
        if len(background) >= self.max_active - admission.background_reserve(self.max_active):
            return False
        if any(r.first_token is None for r in started if r.params.priority == 0):
            return False  # an interactive prompt is on its way to its first token: it goes alone
        return sum(1 for r in background if r.first_token is None) < BACKGROUND_PREFILLS

    def _take(self, req: _Request, chunk: dict[str, Any]) -> str | None:
        """Turn one streamed chunk into a Delta; returns its finish reason, or 'stop_token' for one of
        the request's stop_token_ids (the caller then stops the stream)."""
        choice = (chunk.get("choices") or [{}])[0]
        content = (choice.get("logprobs") or {}).get("content") or []
        ids = [int(c["id"]) for c in content]
        text = choice.get("text") or ""
        stop_ids = set(req.params.stop_token_ids)
        hit = next((i for i, t in enumerate(ids) if t in stop_ids), None)
        if hit is not None:
            ids, content, text = ids[:hit + 1], content[:hit + 1], "".join(c.get("token", "") for c in content[:hit])
        lps: list[TokenLogprob] = []
        if req.params.logprobs:
            lps = [TokenLogprob(int(c["id"]), c.get("token", ""), float(c.get("logprob", 0.0)),
                                [(int(t["id"]), t.get("token", ""), float(t.get("logprob", 0.0)))
                                 for t in (c.get("top_logprobs") or [])[:req.params.top_logprobs]])
                   for c in content]
        now = time.perf_counter()
        with self._lock:
            if req.finished:
                return "stop_token"
            if ids or text:
                if req.first_token is None:
                    req.first_token = now
                    self._turns.notify_all()
                req.text.append(text)
                req.token_ids.extend(ids)
                req.logprobs.extend(lps)
                req.handle._emit(Delta(text, ids, lps))
                self._chunks += 1
                self._peak = max(self._peak, sum(1 for r in self._requests.values() if r.first_token))
                self._generated += len(ids)
                self._recent.append((now, len(ids)))
                while self._recent and now - self._recent[0][0] > 5.0:
                    self._recent.popleft()
            usage = chunk.get("usage")
            if usage:
                req.usage = Usage(int(usage.get("prompt_tokens", req.prompt_tokens)),
                                  int(usage.get("completion_tokens", len(req.token_ids))))
        if hit is not None:
            return "stop_token"
        return choice.get("finish_reason")

    def _finish(self, rid: str, req: _Request, reason: str, error: BaseException | None) -> None:
        with self._lock:
            self._threads.discard(threading.current_thread())
            if req.finished:
                return
            req.finished = True
            self._requests.pop(rid, None)
            self._turns.notify_all()
        if error is not None:
            req.handle._finish(None, error)
            return
        req.handle._finish(self._completion(rid, req, "cancelled" if req.cancelled else reason))

    def _completion(self, rid: str, req: _Request, reason: str) -> Completion:
        usage = req.usage if req.usage is not None and reason != "cancelled" else Usage(req.prompt_tokens,
                                                                                       len(req.token_ids))
        return Completion(request_id=rid, text="".join(req.text), token_ids=list(req.token_ids),
                          finish_reason=reason, usage=usage,
                          ttft_s=req.first_token - req.submitted if req.first_token else None,
                          total_s=time.perf_counter() - req.submitted, logprobs=list(req.logprobs))

    def _cancel(self, rid: str) -> None:
        """Finish the request as cancelled now; its thread stops llama.cpp's stream at the next chunk."""
        with self._lock:
            req = self._requests.pop(rid, None)
            if req is None or req.finished:
                return
            req.cancelled = req.finished = True
            self._turns.notify_all()
        req.handle._finish(self._completion(rid, req, "cancelled"))

    # -- figures and shutdown --
    def stats(self) -> Any:
        from engine.llm_engine import EngineStats

        progress = _decode_calls(self._server.handle_metrics())  # llama.cpp's batches, prompt chunks included
        with self._lock:
            live = list(self._requests.values())
            running = [r for r in live if r.first_token is not None][:self.config.max_num_seqs]
            used = sum(r.prompt_tokens + len(r.token_ids) for r in running)
            span = (self._recent[-1][0] - self._recent[0][0]) if len(self._recent) > 1 else 0.0
            tps = sum(n for _, n in list(self._recent)[1:]) / span if span > 0 else 0.0
            return EngineStats(running=len(running), waiting=len(live) - len(running), batch_size=len(running),
                               kv_blocks_used=used, kv_blocks_total=self.n_ctx,
                               kv_cache_usage=min(1.0, used / self.n_ctx), tokens_per_s=tps,
                               generated_tokens=self._generated, steps=self._chunks, progress=progress,
                               preemptions=0, peak_batch_size=self._peak)

    def close(self) -> None:
        """Cancel what is in flight, wait for the request threads to let go, then stop llama.cpp."""
        with self._lock:
            self._closed = True
            self._turns.notify_all()
            rids = list(self._requests)
        for rid in rids:
            self._cancel(rid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(timeout=0.1)
        server, self._server = getattr(self, "_server", None), None
        del server  # the destructor stops llama.cpp's loop and frees the model

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Restore the process's SIGINT/SIGTERM dispositions after llama.cpp's server replaced them (so a
    Celery worker still shuts down warm on SIGTERM). Uses libc's sigaction, which works from any thread;
    the saved structs are copied back byte for byte."""
    libc = ctypes.CDLL(None, use_errno=True)
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        buf = ctypes.create_string_buffer(512)  # larger than any libc's struct sigaction
        if libc.sigaction(int(sig), None, buf) == 0:
            saved[sig] = buf
    try:
        yield
    finally:
        for sig, buf in saved.items():
            libc.sigaction(int(sig), buf, None)


class _Failed(Exception):
    def __init__(self, error: Any):
        super().__init__(str(error))
        self.error = error


def _guarded(callback: Any) -> Any:
    """xllamacpp calls back from C; an exception there would be lost, so keep it and stop the stream."""
    def call(chunk: Any) -> bool:
        try:
            return bool(callback(chunk))
        except Exception as exc:  # noqa: BLE001 - re-raised by the request thread
            callback.failure = exc
            return True
    return call


def _error_of(error: Any) -> EngineError:
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
        return PromptTooLong(f"{message} (llama.cpp)")
    return EngineError(f"llama.cpp: {message}")

"""The `explain` job: token attributions for one answer, on a worker that hosts the deployment (the job
travels on the deployment's queue). It borrows the replica's loaded engine for its tokenizer and weights
(engine/attribute.py runs the engine's uncached forward, `engine.runner.dense_forward`, over them, so the
engine's running batches and KV cache are untouched),
reports progress as it goes, and returns the result the job keeps.

Explain runs below serving: its forwards go in chunks of about a tenth of a second (engine/pacer.py), and
before each chunk its `gate` waits while the replica's engine has requests to run (at most
TAUON_EXPLAIN_YIELD_S, so explain still moves under steady traffic) and checks for a cancel, which
therefore ends the job within about a chunk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings

from console.jobs.models import Job, JobCancelled

if TYPE_CHECKING:
    from engine.pacer import ServingFirst

REPORT_EVERY_S = 0.5
CANCEL_POLL_S = 0.2  # how often the gate reads the job's cancel flag


class ExplainError(Exception):
    pass


def explain(job: Job) -> dict[str, Any]:
    from workers.serving import NotServing, hosted

    p = job.params
    name = p["deployment"]
    runner = hosted(name)
    if runner is None:
        raise ExplainError(f"this worker does not host '{name}' (any more); run Explain again")
    try:
        loaded = runner.acquire()
    except NotServing as exc:
        raise ExplainError(f"{exc}; run Explain again") from exc
    try:
        if p["task"] == "text-classification":
            result = _classification(job, loaded.engine, p)
        else:
            result = _generation(job, loaded.engine, p)
        result.update(deployment=name, version=loaded.version_number)
        return result
    finally:
        runner.release(loaded)


def gate(job: Job, engine: Any) -> ServingFirst:
    """The pause before every chunk of attribution: the replica's engine goes first (TAUON_EXPLAIN_YIELD_S at
    most per chunk), and a cancel is seen (JobCancelled; the flag is read every CANCEL_POLL_S)."""
    checked = [0.0]

    def check_cancel() -> None:
        now = time.monotonic()
        if now - checked[0] < CANCEL_POLL_S:
            return
        checked[0] = now
        if Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
            raise JobCancelled()

    from engine.pacer import ServingFirst

    scheduler = getattr(engine, "scheduler", None)
    return ServingFirst(scheduler.has_work if scheduler is not None else None, settings.TAUON_EXPLAIN_YIELD_S,
                        check_cancel)


def _progress(job: Job, what: str):  # type: ignore[no-untyped-def]
    last = [0.0]

    def report(done: int, planned: int) -> None:
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_S or done >= planned:
            last[0] = now
            job.report(0.05 + 0.95 * done / max(planned, 1), f"{what}: {done} of {planned}")

    return report


def _generation(job: Job, engine: Any, p: dict[str, Any]) -> dict[str, Any]:
    from engine import SamplingParams
    from engine import attribute as A

    tokenizer = engine.tokenizer
    source = p.get("messages") or p.get("prompt")
    prompt = A.build_prompt(tokenizer, source, span=p.get("span", "prompt"), words=bool(p.get("words")))
    if prompt.ids != engine.encode(source):
        raise ExplainError("the prompt tokenizes differently here than in the engine; cannot attribute exactly")
    prompt_cap, output_cap = settings.TAUON_EXPLAIN_MAX_PROMPT_TOKENS, settings.TAUON_EXPLAIN_MAX_OUTPUT_TOKENS
    if len(prompt.ids) > prompt_cap:
        raise ExplainError(f"the prompt has {len(prompt.ids)} tokens; at most {prompt_cap} prompt tokens can be "
                           "explained. Shorten it.")
    output = p.get("output")
    generated = output is None
    exact = True  # the answer's own token ids (generated here, or given as ids)
    if generated:  # the deployment's own greedy answer, token for token
        job.report(0.01, "Generating the answer greedily", log="No answer given: generating one greedily.")
        done = engine.generate(prompt.ids, SamplingParams(max_new_tokens=output_cap)).result(timeout=600)
        targets = [t for t in done.token_ids if t not in engine.eos_ids]
    elif isinstance(output, list):
        targets = [int(t) for t in output]
    else:  # the answer's text: tokenized as the engine's detokenizer emitted it (checked to round-trip)
        targets = list(tokenizer(output, add_special_tokens=False)["input_ids"])
        exact = tokenizer.decode(targets, skip_special_tokens=False) == output
        if not exact:
            job.report(log="Note: the answer's text does not round-trip through the tokenizer exactly.")
    if len(targets) > output_cap:
        from console.playground.explain import output_cap_message

        raise ExplainError(f"the answer has {len(targets)} tokens; {output_cap_message()}")
    if not targets:
        raise ExplainError("the answer is empty; there is nothing to explain")
    method = p["method"]
    options = {k: p[k] for k in ("steps", "samples") if p.get(k)}
    plan = A.estimate(method, len(prompt.features), len(targets), length=len(prompt.ids) + len(targets), **options)
    job.report(0.05, f"{method}: {plan['sequences']} sequences in {plan['batches']} forward passes",
               log=f"Estimate: {len(prompt.features)} input features × {len(targets)} output tokens → "
                   f"{plan['sequences']} sequences in {plan['batches']} batched forward passes"
                   + (f" and {plan['backwards'] * plan['batches']} backward passes" if plan["backwards"] else "") + ".")
    pause = gate(job, engine)
    with _torch_stack(job, engine) as stack:
        result = A.explain_generation(stack, tokenizer, prompt, targets, method,
                                      progress=_progress(job, method.replace("_", " ")), pause=pause, **options)
    out = result.as_dict()
    out.update(output_text=tokenizer.decode(targets, skip_special_tokens=False), output_ids=targets,
               generated=generated, output_round_trips=exact, span=p.get("span", "prompt"),
               words=bool(p.get("words")),
               prompt_tokens=len(prompt.ids), estimate=plan, chunks=pause.pauses,
               yielded_s=round(pause.waited_s, 3))
    job.report(1.0, f"Done in {result.seconds:.1f} s",
               log=f"{result.forward_passes} sequences in {result.batches} forward passes ({pause.pauses} chunks), "
                   f"{result.seconds:.1f} s, of which {pause.waited_s:.1f} s waiting for serving.")
    return out


@contextmanager
def _torch_stack(job: Job, engine: Any) -> Iterator[Any]:
    """The torch weights attribution runs on: the engine's own, or, for a runtime without them (llama.cpp),
    the version's safetensors weights loaded for this job and released after it."""
    if getattr(engine, "runtime", "torch") == "torch":
        yield engine.stack
        return
    from engine import Engine, EngineConfig
    from engine.loader import release_memory

    job.report(log=f"This deployment runs on {engine.runtime}; attributing with the version's torch weights "
                   "(safetensors), loaded for this job and released after it.")
    weights = Engine.from_pretrained(engine.folder, EngineConfig(runtime="torch", max_num_seqs=1,
                                                                 kv_cache_bytes=16 * 1024 * 1024))
    try:
        yield weights.stack
    finally:
        weights.close()
        del weights
        release_memory()


def _classification(job: Job, engine: Any, p: dict[str, Any]) -> dict[str, Any]:
    from engine import attribute as A

    if not hasattr(engine, "classify"):
        raise ExplainError("this deployment does not classify texts")
    steps = int(p.get("steps") or 32)
    job.report(0.05, "integrated gradients", log=f"Estimate: {steps} path points through the model, one backward each.")
    result = A.explain_classification(engine.model, engine.tokenizer, p["input"], label=p.get("label"),
                                      words=bool(p.get("words")), steps=steps, max_length=engine.max_length,
                                      progress=_progress(job, "integrated gradients"), pause=gate(job, engine))
    out = result.as_dict()
    out.update(words=bool(p.get("words")), text=p["input"])
    return out

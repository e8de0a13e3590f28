"""The `explain` job: token attributions for one answer, on a worker that hosts the deployment (the job
travels on the deployment's queue). It borrows the replica's loaded engine for its tokenizer and weights
(engine/attribute.py runs its own forward over them, so the engine's running batches are untouched),
reports progress as it goes, and returns the result the job keeps.

Explain runs below serving: its forwards go in chunks of about a quarter second (engine/pacer.py), and
before each chunk the `Gate` waits while the replica's engine has requests to run (at most
TAUON_EXPLAIN_YIELD_S, so explain still moves under steady traffic) and checks for a cancel, which
therefore ends the job within about a chunk."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from console.jobs.models import Job, JobCancelled

REPORT_EVERY_S = 0.5
POLL_S = 0.005  # how often a yielding explain looks at the engine again
CANCEL_POLL_S = 0.2  # how often the gate reads the job's cancel flag


class ExplainError(Exception):
    pass


def explain(job: Job) -> dict[str, Any]:
    from workers.serving import Host, NotServing

    p = job.params
    name = p["deployment"]
    host = Host.current
    runner = host.runner(name) if host else None
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


class Gate:
    """Called before every chunk of attribution work: serving goes first, then a cancel is seen."""

    def __init__(self, job: Job, engine: Any, yield_s: float | None = None):
        self.job = job
        self.scheduler = getattr(engine, "scheduler", None)
        self.yield_s = float(settings.TAUON_EXPLAIN_YIELD_S if yield_s is None else yield_s)
        self.checked = 0.0
        self.waited_s = 0.0
        self.chunks = 0

    def __call__(self) -> None:
        self.chunks += 1
        if self.scheduler is not None and self.yield_s > 0:
            began = time.monotonic()
            until = began + self.yield_s
            while self.scheduler.has_work() and time.monotonic() < until:
                self.check_cancel()
                time.sleep(POLL_S)
            self.waited_s += time.monotonic() - began
        self.check_cancel()

    def check_cancel(self) -> None:
        now = time.monotonic()
        if now - self.checked < CANCEL_POLL_S:
            return
        self.checked = now
        if Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled()


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
        raise ExplainError(f"the prompt has {len(prompt.ids)} tokens; attribution is capped at {prompt_cap} "
                           "(TAUON_EXPLAIN_MAX_PROMPT_TOKENS)")
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
        raise ExplainError(f"the answer has {len(targets)} tokens; attribution is capped at {output_cap} output "
                           "tokens (TAUON_EXPLAIN_MAX_OUTPUT_TOKENS)")
    if not targets:
        raise ExplainError("the answer is empty; there is nothing to explain")
    method = p["method"]
    options = {k: p[k] for k in ("steps", "samples") if p.get(k)}
    plan = A.estimate(method, len(prompt.features), len(targets), length=len(prompt.ids) + len(targets), **options)
    job.report(0.05, f"{method}: {plan['sequences']} sequences in {plan['batches']} forward passes",
               log=f"Estimate: {len(prompt.features)} input features × {len(targets)} output tokens → "
                   f"{plan['sequences']} sequences in {plan['batches']} batched forward passes"
                   + (f" and {plan['backwards'] * plan['batches']} backward passes" if plan["backwards"] else "") + ".")
    gate = Gate(job, engine)
    result = A.explain_generation(engine.stack, tokenizer, prompt, targets, method,
                                  progress=_progress(job, method.replace("_", " ")), pause=gate, **options)
    out = result.as_dict()
    out.update(output_text=tokenizer.decode(targets, skip_special_tokens=False), output_ids=targets,
               generated=generated, output_round_trips=exact, span=p.get("span", "prompt"),
               words=bool(p.get("words")),
               prompt_tokens=len(prompt.ids), estimate=plan, chunks=gate.chunks,
               yielded_s=round(gate.waited_s, 3))
    job.report(1.0, f"Done in {result.seconds:.1f} s",
               log=f"{result.forward_passes} sequences in {result.batches} forward passes ({gate.chunks} chunks), "
                   f"{result.seconds:.1f} s, of which {gate.waited_s:.1f} s waiting for serving.")
    return out


def _classification(job: Job, engine: Any, p: dict[str, Any]) -> dict[str, Any]:
    from engine import attribute as A

    if not hasattr(engine, "classify"):
        raise ExplainError("this deployment does not classify texts")
    steps = int(p.get("steps") or 32)
    job.report(0.05, "integrated gradients", log=f"Estimate: {steps} path points through the model, one backward each.")
    result = A.explain_classification(engine.model, engine.tokenizer, p["input"], label=p.get("label"),
                                      words=bool(p.get("words")), steps=steps, max_length=engine.max_length,
                                      progress=_progress(job, "integrated gradients"), pause=Gate(job, engine))
    out = result.as_dict()
    out.update(words=bool(p.get("words")), text=p["input"])
    return out

"""The `tune` job: successive halving over engine settings, each trial measured through the serving stack
on a transient deployment of its own (workers/tune_trials.py; never the live replicas), quality (perplexity
per quantization) in this process, the figures and the recommendation stored as the result.

Progress and ETA go through job.report() after every measurement and twice a second while serving (a
cancel stops the search there); each trial's figures are logged and kept in the job's live series, so the
result page can draw them while it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from console.jobs.models import Job
from console.registry.models import Model

log = logging.getLogger(__name__)
PROSE = Path(__file__).resolve().parent.parent / "console" / "evaluation" / "data" / "plain-english.txt"


def _workload(spec: dict[str, Any]) -> tuple[Any, str]:
    """engine.tuning.Workload of the params' workload, and the text quality is scored on."""
    from engine.tuning import Workload, synthetic

    text = PROSE.read_text(encoding="utf-8")
    levels, requests = spec["concurrency"], spec["requests"]
    if "chats" in spec:  # a traffic sample: its chats, each answered with its own max_tokens
        return Workload([c["messages"] for c in spec["chats"]], [c["max_tokens"] for c in spec["chats"]], levels), text
    if "synthetic" in spec:
        s = spec["synthetic"]
        return synthetic(tuple(s["prompt_tokens"]), tuple(s["output_tokens"]), levels, requests), text
    from console.evaluation.models import DatasetVersion

    version = DatasetVersion.objects.select_related("dataset").get(dataset__name=spec["dataset"],
                                                                    number=spec["dataset_version"])
    data = version.load()
    if version.dataset.kind == "text":
        paragraphs = [p for p in data.split("\n\n") if p.strip()] or [data]
        return Workload([" ".join(p.split()[:48]) for p in paragraphs], [32], levels), data
    return Workload([[{"role": "user", "content": ex["prompt"]}] for ex in data], [32], levels), text


def tune(job: Job) -> dict[str, Any]:
    from console.deployments.tuning import remove_trials
    from engine.tuning import candidates, engine_config, memory_estimate, pareto, quality, recommend, search
    from workers import tune_trials

    params = job.params
    version = Model.objects.get(name=params["model"]).versions.get(number=params["version"])
    workload, text = _workload(params["workload"])
    settings = candidates(params["space"], params["baseline"], params["max_trials"], seed=job.pk or 0)
    base_engine = {k: v for k, v in params["base_engine"].items()}
    objective, constraints = params["objective"], params["constraints"]
    job.report(0.0, "starting", log=f"Tuning {version.model.name} v{version.number}: {len(settings)} candidate "
                                    f"settings, objective {objective}, constraints {constraints or 'none'}; "
                                    "each trial on a deployment of its own, through the serving stack")
    state = {"done": 0, "total": 1}

    def measure_fn(number: int, trial: dict[str, Any], requests: int, with_quality: bool) -> dict[str, Any]:
        def progress(fraction: float, message: str) -> None:
            share = (state["done"] + fraction) / max(1, state["total"])
            job.report(share, f"trial {number}: {message}")

        engine = {**base_engine, **trial}
        if engine["runtime"] == "auto":
            engine["runtime"] = "torch"
        got: dict[str, Any] = {}
        if with_quality:
            progress(0.0, "scoring perplexity")
            got["perplexity"] = quality(version.path, engine_config(engine, {}), text)
        # at least one request per place at the highest concurrency level, so every level is filled
        share = max(requests, max(workload.concurrency))
        got.update(tune_trials.measure(job, number, version, engine, workload.share(share), progress))
        for level in got["levels"]:  # (an estimate: the replica runs in another process)
            level["memory_bytes"] = memory_estimate(version.parameter_count or 0, trial)
        return got

    def on_trial(trial: Any, done: int, total: int) -> None:
        state["done"], state["total"] = done, total
        if trial.status == "measured":
            f = trial.figures
            line = (f"trial {trial.number} ({_summary(trial.settings)}): {f['tokens_per_s']:.1f} tok/s, p99 TTFT "
                    f"{f['ttft_p99_ms']:.0f} ms at concurrency {f['concurrency']} ({trial.requests} requests)")
            job.report(done / total, f"trial {trial.number} measured", log=line)
        else:
            job.report(done / total, f"trial {trial.number} {trial.status}",
                       log=f"trial {trial.number} ({_summary(trial.settings)}) {trial.status}: {trial.reason}")

    remove_trials(job)  # an earlier delivery's, if its worker died
    try:
        trials = search(settings, params["workload"]["requests"], measure_fn, objective, constraints,
                        version.parameter_count or 0, on_trial)
    finally:
        remove_trials(job)
    best, why = recommend(trials, objective, constraints)
    result = {"model": version.model.name, "version": version.number, "deployment": params.get("deployment"),
              "objective": objective, "constraints": constraints, "trials": [t.as_dict() for t in trials],
              "pareto": pareto(trials), "recommended": best.number if best else None,
              "recommended_settings": best.settings if best else None, "why": why, "baseline": 1}
    job.report(1.0, "done", log=f"recommended: trial {best.number} ({_summary(best.settings)}); {why}" if best
               else why, cancellable=False)
    return result


def _summary(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())

"""The `evaluate` job: rows in, engine.evaluator.run() per version, rows out.

Each version is loaded under the job's engine config, measured, and unloaded before the next. The
results are stored only at the end, in one transaction with the job's success, and only while the
job is still running: a cancel, a reaped job or a killed worker leaves no partial result behind,
and a redelivered job can simply run again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from console.evaluation.config import key_of, rows_of, settings_of, summary
from console.evaluation.models import DatasetVersion, EvaluationResult
from console.jobs.choices import JobStatus
from console.jobs.models import Job, JobCancelled
from console.registry.models import Model

log = logging.getLogger(__name__)


def evaluate(job: Job) -> dict[str, Any]:
    params = job.params
    model = Model.objects.get(name=params["model"])
    versions = [model.versions.get(number=n) for n in params["versions"]]
    dataset_version = DatasetVersion.objects.select_related("dataset").get(
        dataset__name=params["dataset"], number=params["dataset_version"])
    config = params["config"]
    kind = dataset_version.dataset.kind
    data = rows_of(config, dataset_version.load())
    job.report(0.0, "starting", log=f"Evaluating {model.name} v{', v'.join(map(str, params['versions']))} on "
                                    f"{dataset_version} ({kind}); config: {summary(config)}")
    metrics = measure(job, [Target.of(v) for v in versions], kind, data, config)
    outcome = {"metrics": metrics, "model": model.name, "dataset": dataset_version.dataset.name,
               "dataset_version": dataset_version.number, "config_key": key_of(config)}
    store_results(job, versions, dataset_version, config, outcome)
    return outcome


@dataclass(frozen=True, slots=True)
class Target:
    """A folder `measure` runs: the key its metrics go under, the label its progress names, its sizes."""
    key: str
    label: str
    path: Path
    parameter_count: int | None
    size_bytes: int | None

    @classmethod
    def of(cls, version: Any, label: str | None = None) -> Target:
        return cls(str(version.number), label or f"{version.model.name} v{version.number}", Path(version.path),
                   version.parameter_count, version.total_size)


def measure(job: Job, targets: list[Target], kind: str, data: Any, config: dict[str, Any], *,
            span: tuple[float, float] = (0.0, 1.0), cancellable: bool = True) -> dict[str, dict[str, Any]]:
    """engine.evaluator.run() of each target on `data` under a normalized config, each loaded, measured
    and unloaded before the next, its progress reported within `span` of the job's: metrics (with the
    target's parameter count and size) by target key."""
    from engine.config import EngineConfig
    from engine.evaluator import run
    from engine.loader import release_memory

    engine_config = EngineConfig(**config["engine"])
    settings = settings_of(config)
    start, width = span[0], (span[1] - span[0]) / max(1, len(targets))
    metrics: dict[str, dict[str, Any]] = {}
    for i, target in enumerate(targets):
        label = target.label

        def progress(fraction: float, message: str, i: int = i, label: str = label) -> None:
            job.report(start + (i + fraction) * width, f"{label}: {message}", cancellable=cancellable)

        try:
            result = run(target.path, kind, data, engine_config, settings, on_progress=progress)
        finally:
            release_memory()
        result.update(parameter_count=target.parameter_count, size_bytes=target.size_bytes)
        metrics[target.key] = result
        measured_by = f" (tokens/s and TTFT on {result['runtime_note']})" if result.get("runtime_note") else ""
        job.report(start + (i + 1) * width, f"{label} done", log=f"{label}: {_headline(result)}{measured_by}",
                   cancellable=cancellable)
    return metrics


def save(versions: list[Any], dataset_version: DatasetVersion, config: dict[str, Any],
         metrics: dict[str, dict[str, Any]], job: Job) -> None:
    """Each version's metrics as its EvaluationResult under this config. A repeat replaces them, visibly: the
    result another job stored before (an evaluation, when a compress job measures the same key) is kept
    under `replaced` with that job's id and kind, and the pages show it."""
    key = key_of(config)
    for version in versions:
        found = {**metrics[str(version.number)]}
        previous = (EvaluationResult.objects.filter(version=version, dataset_version=dataset_version, config_key=key)
                    .select_related("job").first())
        if previous is not None and previous.job_id != job.pk:
            found["replaced"] = {"job": previous.job_id, "kind": previous.job.kind if previous.job else None,
                                 "updated_at": previous.updated_at.isoformat(),
                                 "metrics": {k: v for k, v in previous.metrics.items() if k != "replaced"}}
        elif previous is not None and "replaced" in previous.metrics:  # the same job again: keep what it replaced
            found["replaced"] = previous.metrics["replaced"]
        EvaluationResult.objects.update_or_create(
            version=version, dataset_version=dataset_version, config_key=key,
            defaults={"config": config, "metrics": found, "job": job, "runtime": str(found.get("runtime", ""))})


def _headline(metrics: dict[str, Any]) -> str:
    shown = ("perplexity", "exact_match", "token_f1", "accuracy", "macro_f1", "entity_f1", "tokens_per_s", "ttft_s")
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in shown if isinstance(metrics.get(k), int | float))


def store_results(job: Job, versions: list[Any], dataset_version: DatasetVersion, config: dict[str, Any],
           outcome: dict[str, Any], *, cancellable: bool = True) -> None:
    """All results and the job's success in one transaction, or nothing if the job stopped running
    (or was asked to cancel, when `cancellable`)."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk).first()
        if locked is None or locked.status != JobStatus.RUNNING:
            log.warning("evaluation job %s is no longer running (%s); its results are dropped", job.pk,
                        locked.status if locked else "deleted")
            return
        if locked.cancel_requested and cancellable:
            raise JobCancelled()
        save(versions, dataset_version, config, outcome["metrics"], job)
        job.succeed(outcome)

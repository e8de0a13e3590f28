"""The `finetune` job: rows in, engine.finetune.finetune() on the parent's folder, a child version out.

The loss of every optimizer step goes to the job's progress message, and to its log at most ~50
times a run; the whole series is in the result. Checkpoints live under
TAUON_STORAGE/finetune/job-<id>, so a redelivery after a killed worker resumes from the last one;
they are removed once the child exists. The child is a version of `target_model` (created when
missing) whose parent is the fine-tuned version and whose producing job holds the dataset version
and the hyperparameters; its import runs in this process. Once it is ready, the child (and the parent,
when it does the same task) is evaluated on the rows training held out, stored as EvaluationResult rows
under a held-out config, so the evaluation page compares them; the metrics are in the result too.

Idempotent: the child's folder carries the training figures (finetune.json), so a redelivery that
finds a version this job already produced (its worker died after storing it, before the job
finished) finishes that one (lineage, import) instead of training again and adding a second child."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from typing import Any

from console.evaluation.config import held_out, key_of, rows_of, summary
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from console.registry.choices import VersionSource, VersionStatus
from console.registry.importing import add_version_from_path, staging, storage_dir
from console.registry.models import Model, ModelVersion
from workers.evaluation import Target, measure, save
from workers.importing import import_in_process

log = logging.getLogger(__name__)
RECORD = "finetune.json"  # in the child's folder: the training figures (engine.finetune.FinetuneResult)


def finetune(job: Job) -> dict[str, Any]:
    from engine.finetune import FinetuneConfig
    from engine.finetune import finetune as train

    params = job.params
    parent = ModelVersion.objects.select_related("model").get(model__name=params["model"], number=params["version"])
    dataset_version = DatasetVersion.objects.select_related("dataset").get(
        dataset__name=params["dataset"], number=params["dataset_version"])
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in params.items() if k in names})
    checkpoints = storage_dir("finetune") / f"job-{job.pk}"
    rows = dataset_version.load()
    if config.checkpoint_every == 0:  # a killed worker still resumes: a checkpoint every ~10 % of the run
        estimate = config.max_steps or math.ceil(len(rows) / config.batch_size / config.grad_accum) * config.epochs
        config.checkpoint_every = max(1, estimate // 10)
    stored = ModelVersion.objects.filter(produced_by=job).exclude(status=VersionStatus.FAILED).first()
    if stored is not None:  # an earlier delivery stored the child, then its worker died
        job.report(0.92, "finishing the stored child", log=f"{stored} was stored by an earlier delivery of "
                                                            f"this job; finishing it instead of training again")
        return _finish(job, stored, parent, dataset_version, config, checkpoints)
    job.report(0.0, "starting", log=f"Fine-tuning {parent.model.name} v{parent.number} ({config.method}, "
                                    f"{config.task}) on {dataset_version} ({len(rows)} rows)")
    every = [1]

    def on_step(step: int, total: int, loss: float, lr: float) -> None:
        if step == 1:
            every[0] = max(1, total // 50)
        line = f"step {step}/{total} loss {loss:.4f} lr {lr:.3g}" if step % every[0] == 0 or step == total else None
        job.report(0.9 * step / total, f"step {step}/{total}: loss {loss:.4f}", log=line,
                   series={"train_loss": (step, loss)})  # written at most every SERIES_FLUSH_S

    with staging() as tmp:
        result = train(parent.path, tmp / "child", rows, config, checkpoint_dir=checkpoints, on_step=on_step)
        if result.resumed_from:
            job.report(None, None, log=f"resumed from the checkpoint of step {result.resumed_from}")
        evals = [(x, y) for x, y in ((0, result.eval_loss_before), (result.steps, result.eval_loss))
                 if y is not None]
        job.report(0.92, "saving the child", log=f"train loss {result.train_loss:.4f}, eval loss "
                   f"{_fmt(result.eval_loss)}, eval accuracy {_fmt(result.eval_accuracy)}",
                   series={"eval_loss": evals} if evals else None, flush=True)
        (tmp / "child" / RECORD).write_text(json.dumps(result.to_dict()))
        target = Model.objects.filter(name=params["target_model"]).first() or Model.objects.create(
            name=params["target_model"], task=config.task, owner=job.created_by,
            description=f"Fine-tuned from {parent.model.name} v{parent.number}.")
        same_model = target.pk == parent.model_id
        child_config = dict(parent.config or {}) if target.task == parent.model.task else {}
        child = add_version_from_path(target, tmp / "child", job.created_by, source=VersionSource.JOB,
                                      source_ref=f"finetune job #{job.pk}: {config.method} of {parent}",
                                      config=child_config, parent=parent if same_model else None,
                                      produced_by=job, enqueue=False)
    return _finish(job, child, parent, dataset_version, config, checkpoints)


def _finish(job: Job, child: ModelVersion, parent: ModelVersion, dataset_version: DatasetVersion,
            config: Any, checkpoints: Any) -> dict[str, Any]:
    """The stored child's lineage and import (each step safe to repeat), then the job's result."""
    if child.parent_id != parent.pk:  # lineage across models: the registry's own check keeps uploads within one model
        ModelVersion.objects.filter(pk=child.pk).update(parent=parent)
    if child.status == VersionStatus.IMPORTING:
        import_in_process(child, job.worker or "finetune")
    shutil.rmtree(checkpoints, ignore_errors=True)
    child.refresh_from_db()
    target = child.model
    figures = json.loads((child.path / RECORD).read_text())
    # The child is ready: from here on a cancel is too late, the job completes.
    job.report(0.95, f"{target.name} v{child.number} ready", cancellable=False)
    evaluation = _evaluate(job, child, parent, dataset_version, config)
    job.report(1.0, f"{target.name} v{child.number} ready", cancellable=False)
    return {"model": target.name, "version": child.number, "version_id": child.pk,
            "parent": {"model": parent.model.name, "version": parent.number},
            "dataset": dataset_version.dataset.name, "dataset_version": dataset_version.number,
            "method": config.method, "task": config.task, "hyperparameters": dataclasses.asdict(config),
            **{k: figures.get(k) for k in ("train_loss", "eval_loss_before", "eval_loss", "eval_accuracy", "labels",
                                           "steps", "losses", "merge_max_abs_diff", "resumed_from")},
            "evaluation": evaluation}


def _evaluate(job: Job, child: ModelVersion, parent: ModelVersion, dataset_version: DatasetVersion,
              config: Any) -> dict[str, Any] | None:
    """The child, and the parent when it does the child's task, measured by engine.evaluator on the rows
    training held out, stored as their EvaluationResult under a held-out config (a repeat replaces them).
    Not cancellable (the child is ready); a version that fails to evaluate is logged, not fatal."""
    if not config.eval_fraction:
        job.report(None, None, log="no held-out rows (eval_fraction 0): the child is not evaluated", cancellable=False)
        return None
    eval_config = held_out(config.seed, config.eval_fraction)
    rows = rows_of(eval_config, dataset_version.load())
    versions = [child] + ([parent] if parent.model.task == child.model.task else [])
    job.report(None, "evaluating on the held-out rows", cancellable=False,
               log=f"Evaluating {' and '.join(f'{v.model.name} v{v.number}' for v in versions)} on the {len(rows)} "
                   f"held-out rows of {dataset_version}; config: {summary(eval_config)}"
                   + ("" if len(versions) > 1 else f" ({parent.model.name} is {parent.model.task}, not "
                                                     f"{child.model.task}: not evaluated)"))
    metrics: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for i, version in enumerate(versions):
        name = f"{version.model.name} v{version.number}"
        try:
            measured = measure(job, [Target.of(version)], dataset_version.dataset.kind, rows, eval_config,
                               cancellable=False,
                               span=(0.95 + 0.05 * i / len(versions), 0.95 + 0.05 * (i + 1) / len(versions)))
        except Exception as exc:  # the child is the product; a failed measurement must not fail the job
            log.exception("finetune job %s: evaluating %s failed", job.pk, name)
            errors[name] = f"{exc.__class__.__name__}: {exc}"[:500]
            job.report(None, None, log=f"evaluating {name} failed: {errors[name]}", cancellable=False)
            continue
        save([version], dataset_version, eval_config, measured, job)
        metrics[name] = measured[str(version.number)]
    return {"dataset": dataset_version.dataset.name, "dataset_version": dataset_version.number,
            "rows": len(rows), "config_key": key_of(eval_config), "config": eval_config,
            "child": metrics.get(f"{child.model.name} v{child.number}"),
            "parent": metrics.get(f"{parent.model.name} v{parent.number}"), "errors": errors}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

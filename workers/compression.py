"""The `compress` job: engine.compress writes a child folder into staging; when a dataset is named,
parent and child are evaluated under one config (size on disk, parameter count, perplexity or task
metric, tokens/s, peak memory) while the child is still only a folder; then the registry stores it as a
new version of the same model (parent, produced_by this job, the method and its recipe in the config),
its import runs in this process, and the results are stored with the job's success.

So a job cancelled or failed before its last step leaves no version behind (a cancel that arrives
once the child is registered is too late: the job completes). Not retried after a lost worker: a
redelivery would create a second child; a child stored but never imported is failed (fail_unimported)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from console.evaluation.config import key_of
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from console.registry.choices import VersionSource
from console.registry.importing import add_version_from_path, staging
from console.registry.models import Model, ModelVersion
from workers.evaluation import Target, measure, store_results
from workers.importing import import_in_process

log = logging.getLogger(__name__)

COMPARED = ("size_bytes", "served_bytes", "parameter_count", "perplexity", "exact_match", "token_f1", "tokens_per_s",
            "peak_memory_bytes")


def compress(job: Job) -> dict[str, Any]:
    from engine.compress import compress_folder, folder_stats

    params = job.params
    model = Model.objects.get(name=params["model"])
    parent = model.versions.get(number=params["version"])
    method = params["method"]
    text = None
    if params.get("calibration_dataset"):
        text = _pinned(params["calibration_dataset"], params.get("calibration_dataset_version")).load()
    shown = {k: params[k] for k in ("sparsity", "structure", "calibration_dataset", "calibration_dataset_version")
             if k in params}
    job.report(0.05, f"{method}: compressing v{parent.number}",
               log=f"Compressing {model.name} v{parent.number} with {method} {shown}")
    with staging() as tmp:
        folder = tmp / "child"
        outcome = compress_folder(parent.path, folder, method, sparsity=params.get("sparsity", 0.5),
                                  structure=params.get("structure", "unstructured"), calibration_text=text)
        stats = folder_stats(folder)
        job.report(0.3, "compressed", log=(f"{method}: sparsity {outcome.sparsity:.4f} over the pruned layers"
                                           if outcome.layer_sparsity else f"{method}: done") +
                   f"; {stats['size_bytes']} bytes on disk (parent {parent.total_size})")
        evaluation = _evaluate(job, parent, folder, stats, params) if params.get("dataset") else None
        job.report(0.9, "registering the child")  # the last point where a cancel leaves nothing behind
        config = _child_config(parent, outcome.as_dict(), params)
        child = add_version_from_path(model, folder, job.created_by, source=VersionSource.JOB,
                                      source_ref=f"compress job #{job.pk}: {method} of v{parent.number}",
                                      config=config, parent=parent, produced_by=job, enqueue=False)
    import_in_process(child, job.worker or "compress")
    child.refresh_from_db()
    job.report(0.95, f"v{child.number} ready", log=f"child v{child.number}: {child.total_size} bytes on disk",
               cancellable=False)
    result: dict[str, Any] = {"model": model.name, "parent": parent.number, "child": child.number,
                              "child_id": child.pk, "method": method, "recipe": outcome.recipe,
                              "sparsity": outcome.sparsity, "layer_sparsity": outcome.layer_sparsity}
    parent_row = {"size_bytes": parent.total_size, "served_bytes": _served_bytes(parent),
                  "parameter_count": parent.parameter_count}
    child_row = {"size_bytes": child.total_size, "served_bytes": _served_bytes(child),
                 "parameter_count": child.parameter_count}
    if evaluation is None:
        result["comparison"] = _compare(parent_row, child_row)
        return result
    dataset_version, metrics = evaluation
    metrics[str(child.number)] = {**metrics.pop("child"), **child_row}
    metrics[str(parent.number)]["served_bytes"] = parent_row["served_bytes"]
    result.update(metrics=metrics, comparison=_compare(metrics[str(parent.number)], metrics[str(child.number)]),
                  dataset=dataset_version.dataset.name, dataset_version=dataset_version.number,
                  config_key=key_of(params["config"]), versions=[parent.number, child.number])
    job.report(1.0, "compared", log="child/parent: " + ", ".join(
        f"{k} {v['ratio']}" for k, v in result["comparison"].items()), cancellable=False)
    store_results(job, [parent, child], dataset_version, params["config"], result, cancellable=False)
    return result


def _served_bytes(version: ModelVersion) -> int:
    """What the runtime `auto` loads: a GGUF version's GGUF file (its safetensors are for Explain and
    friends), else every stored file."""
    from engine.inspect import GGUF_NAME

    gguf = version.path / GGUF_NAME
    return gguf.stat().st_size if gguf.is_file() else version.total_size


def _child_config(parent: ModelVersion, outcome: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in (parent.config or {}).items() if k not in ("compression", "dtype")}
    config["compression"] = {"method": outcome["method"], "recipe": outcome["recipe"], "parent": parent.number,
                             "sparsity": outcome["sparsity"], "layer_sparsity": outcome["layer_sparsity"]}
    if params.get("calibration_dataset"):
        config["compression"]["calibration_dataset"] = params["calibration_dataset"]
        if params.get("calibration_dataset_version") is not None:
            config["compression"]["calibration_dataset_version"] = params["calibration_dataset_version"]
    if outcome["method"] in ("fp16", "bf16"):
        config["dtype"] = outcome["recipe"]["dtype"]
    return config


def _pinned(name: str, number: int | None) -> DatasetVersion:
    """The dataset version the job's params pinned at submission (console/evaluation/compress.py); the latest
    only for a job submitted before versions were pinned (its params name none)."""
    versions = DatasetVersion.objects.filter(dataset__name=name).select_related("dataset")
    return versions.get(number=number) if number is not None else versions.order_by("-number").first()


def _compare(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in COMPARED:
        p, c = parent.get(key), child.get(key)
        if isinstance(p, int | float) and isinstance(c, int | float):
            out[key] = {"parent": p, "child": c, "ratio": round(c / p, 4) if p else None}
    return out


def _evaluate(job: Job, parent: ModelVersion, child_folder: Path, child_stats: dict[str, int],
              params: dict[str, Any]) -> tuple[DatasetVersion, dict[str, dict[str, Any]]]:
    """Parent and child folder on the job's dataset and config: metrics by parent number and "child"."""
    dataset_version = _pinned(params["dataset"], params.get("dataset_version"))
    targets = [Target.of(parent, label=f"evaluating v{parent.number}"),
               Target("child", "evaluating the child", child_folder, child_stats["parameters"],
                      child_stats["size_bytes"])]
    metrics = measure(job, targets, dataset_version.dataset.kind, dataset_version.load(), params["config"],
                      span=(0.3, 0.9))
    return dataset_version, metrics

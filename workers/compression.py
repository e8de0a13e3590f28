"""The `compress` job: engine.compress writes a child folder, the registry stores it as a new version
of the same model (parent, produced_by this job, the method and its recipe in the config), its import
runs in this process, and, when a dataset is named, parent and child are evaluated under one config
and compared (size on disk, parameter count, perplexity or task metric, tokens/s, peak memory).

The child version is created once the compression succeeded; a later failure (evaluation) leaves
it in the registry, ready, and the job failed with the reason. Not retried after a lost worker: a
redelivery would create a second child."""

from __future__ import annotations

import logging
from typing import Any

from console.evaluation.config import key_of
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from console.registry.choices import VersionSource
from console.registry.models import Model, ModelVersion

log = logging.getLogger(__name__)

COMPARED = ("size_bytes", "parameter_count", "perplexity", "exact_match", "token_f1", "tokens_per_s",
            "peak_memory_bytes")


def compress(job: Job) -> dict[str, Any]:
    from console.registry.importing import add_version_from_path, import_in_process, staging
    from engine.compress import compress_folder

    params = job.params
    model = Model.objects.get(name=params["model"])
    parent = model.versions.get(number=params["version"])
    method = params["method"]
    text = None
    if params.get("calibration_dataset"):
        text = _latest(params["calibration_dataset"]).load()
    job.report(0.05, f"{method}: compressing v{parent.number}",
               log=f"Compressing {model.name} v{parent.number} with {method} "
                   f"{ {k: params[k] for k in ('sparsity', 'structure', 'calibration_dataset') if k in params} }")
    with staging() as tmp:
        outcome = compress_folder(parent.path, tmp / "child", method, sparsity=params.get("sparsity", 0.5),
                                  structure=params.get("structure", "unstructured"), calibration_text=text)
        job.report(0.4, "compressed", log=f"{method}: sparsity {outcome.sparsity:.4f} over the pruned layers"
                   if outcome.layer_sparsity else f"{method}: weights cast")
        config = _child_config(parent, outcome.as_dict(), params)
        child = add_version_from_path(model, tmp / "child", job.created_by, source=VersionSource.JOB,
                                      source_ref=f"compress job #{job.pk}: {method} of v{parent.number}",
                                      config=config, parent=parent, produced_by=job, enqueue=False)
    import_in_process(child, job.worker or "compress")
    child.refresh_from_db()
    job.report(0.5, f"v{child.number} ready", log=f"child v{child.number}: {child.total_size} bytes on disk")
    result: dict[str, Any] = {"model": model.name, "parent": parent.number, "child": child.number,
                              "child_id": child.pk, "method": method, "recipe": outcome.recipe,
                              "sparsity": outcome.sparsity, "layer_sparsity": outcome.layer_sparsity}
    parent_row = {"size_bytes": parent.total_size, "parameter_count": parent.parameter_count}
    child_row = {"size_bytes": child.total_size, "parameter_count": child.parameter_count}
    if not params.get("dataset"):
        result["comparison"] = _compare(parent_row, child_row)
        return result
    return _evaluate_and_store(job, parent, child, params, result)


def _child_config(parent: ModelVersion, outcome: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in (parent.config or {}).items() if k not in ("compression", "dtype")}
    config["compression"] = {"method": outcome["method"], "recipe": outcome["recipe"], "parent": parent.number,
                             "sparsity": outcome["sparsity"], "layer_sparsity": outcome["layer_sparsity"]}
    if params.get("calibration_dataset"):
        config["compression"]["calibration_dataset"] = params["calibration_dataset"]
    if outcome["method"] in ("fp16", "bf16"):
        config["dtype"] = outcome["recipe"]["dtype"]
    return config


def _latest(name: str) -> DatasetVersion:
    return DatasetVersion.objects.filter(dataset__name=name).select_related("dataset").order_by("-number").first()


def _compare(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in COMPARED:
        p, c = parent.get(key), child.get(key)
        if isinstance(p, int | float) and isinstance(c, int | float):
            out[key] = {"parent": p, "child": c, "ratio": round(c / p, 4) if p else None}
    return out


def _evaluate_and_store(job: Job, parent: ModelVersion, child: ModelVersion, params: dict[str, Any],
                        result: dict[str, Any]) -> dict[str, Any]:
    from engine.config import EngineConfig
    from engine.evaluator import Settings, run
    from engine.loader import release_memory
    from workers.evaluation import _store

    dataset_version = _latest(params["dataset"])
    config = params["config"]
    engine_config = EngineConfig(**config["engine"])
    settings = Settings(**{k: v for k, v in config.items() if k != "engine"})
    data = dataset_version.load()
    metrics: dict[str, dict[str, Any]] = {}
    for i, version in enumerate((parent, child)):
        def progress(fraction: float, message: str, i: int = i, number: int = version.number) -> None:
            job.report(0.5 + 0.5 * (i + fraction) / 2, f"evaluating v{number}: {message}")

        try:
            figures = run(version.path, dataset_version.dataset.kind, data, engine_config, settings,
                          on_progress=progress)
        finally:
            release_memory()
        figures.update(parameter_count=version.parameter_count, size_bytes=version.total_size)
        metrics[str(version.number)] = figures
    result.update(metrics=metrics, comparison=_compare(metrics[str(parent.number)], metrics[str(child.number)]),
                  dataset=dataset_version.dataset.name, dataset_version=dataset_version.number,
                  config_key=key_of(config), versions=[parent.number, child.number])
    job.report(1.0, "compared", log="child/parent: " + ", ".join(
        f"{k} {v['ratio']}" for k, v in result["comparison"].items()))
    _store(job, [parent, child], dataset_version, config, result)
    return result

"""A `finetune` job's params, checked before any job exists: the parent version, a dataset whose kind
fits the task, labels of the held-out split that training shows, a sequence length within the
model's context, and hyperparameters that engine.finetune.FinetuneConfig accepts."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from django.utils.text import slugify

from console.evaluation.params import dataset_named, dataset_version_of, fail, model_named, ready_version
from console.registry.importing import fail_unimported, storage_dir
from console.registry.models import Model
from engine.finetune import FinetuneConfig, context_length, labels_of, missing_labels, split
from engine.int8_format import is_stored

# Which dataset kind each fine-tuning task trains on.
KIND_OF_TASK = {"text-generation": "qa", "text-classification": "classification", "token-classification": "ner"}
HYPERPARAMETERS = [f.name for f in dataclasses.fields(FinetuneConfig) if f.name not in ("task", "method")]
NAMED = {"model", "version", "dataset", "dataset_version", "method", "task", "target_model"}
MAX_STEPS = 100_000


def validate_params(params: dict[str, Any], user: Any) -> dict[str, Any]:
    unknown = sorted(set(params) - NAMED - set(HYPERPARAMETERS))
    if unknown:
        raise fail(unknown[0], f"unknown parameter; a fine-tuning takes {', '.join(sorted(NAMED))} and the "
                                f"hyperparameters {', '.join(HYPERPARAMETERS)}")
    model = model_named(params.get("model"), "fine-tune")
    parent = ready_version(model, params.get("version"), "fine-tune", "fine-tuned")
    if stored := is_stored(Path(parent.path)):
        raise fail("version", f"Version {parent.number} is stored as {stored} (a compressed child), which can't be "
                              "trained; fine-tune its float parent instead.")
    dataset = dataset_named(params.get("dataset"), "train")
    task = params.get("task") or (model.task if model.task in KIND_OF_TASK else
                                  {v: k for k, v in KIND_OF_TASK.items()}.get(dataset.kind, model.task))
    if task not in KIND_OF_TASK:
        raise fail("task", f"Fine-tuning supports the tasks {', '.join(KIND_OF_TASK)}; got {task!r}.")
    if dataset.kind != KIND_OF_TASK[task]:
        raise fail("dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset; {task} fine-tuning "
                               f"trains on a {KIND_OF_TASK[task]} dataset.")
    dataset_version = dataset_version_of(dataset, params.get("dataset_version"))

    target = params.get("target_model") or model.name
    if not isinstance(target, str) or slugify(target) != target or len(target) > 100:
        raise fail("target_model", "Give the target model as a slug (letters, digits, - and _).")
    existing = Model.objects.filter(name=target).first()
    if existing is not None and existing.task != task:
        raise fail("target_model", f"Model '{target}' is {existing.task}; a {task} fine-tuning needs a "
                                    f"{task} model (or a new name, created for it).")

    hyper = {k: params[k] for k in HYPERPARAMETERS if k in params}
    context = context_length(parent.path)
    if "max_length" not in hyper and context is not None:  # the default, within the model's context
        hyper["max_length"] = min(FinetuneConfig.__dataclass_fields__["max_length"].default, context)
    try:
        config = FinetuneConfig(task=task, method=params.get("method", "lora"), **hyper)
    except (TypeError, ValueError) as exc:
        field = next((k for k in (*hyper, "method") if k in str(exc)), "method")
        raise fail(field, str(exc)) from exc
    if context is not None and config.max_length > context:
        raise fail("max_length", f"max_length {config.max_length} is above the model's context of {context} tokens.")
    if config.max_steps > MAX_STEPS:
        raise fail("max_steps", f"At most {MAX_STEPS} steps.")

    rows = dataset_version.load()
    train, held_out = split(rows, config.eval_fraction, config.seed)
    if task != "text-generation":
        if len(labels_of(train)) < 2:
            raise fail("dataset", "A classifier needs at least two labels in its training split.")
        if missing := missing_labels(train, held_out):
            raise fail("eval_fraction", f"The held-out split (seed {config.seed}) has labels training never shows: "
                                         f"{', '.join(missing)}; add rows of them or change seed/eval_fraction.")
    return {"model": model.name, "version": parent.number, "dataset": dataset.name,
            "dataset_version": dataset_version.number, "target_model": target,
            **{k: v for k, v in dataclasses.asdict(config).items()}}


def finetune_failed(job: Any) -> None:
    """A failed or cancelled fine-tuning keeps no checkpoints (a redelivery resumes only while it runs), nor
    a child its dead worker stored but never imported (failed, its files removed, as a failed import)."""
    shutil.rmtree(storage_dir("finetune") / f"job-{job.pk}", ignore_errors=True)
    fail_unimported(job)

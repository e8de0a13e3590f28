"""Predict on a dataset: run a registered dataset's texts through a text- or token-classification deployment as
a `predict` job (the body is workers/predict.py), keep the predictions in one file, and summarize them (label
distribution; accuracy for a `classification` dataset, whose examples carry their labels).

The checks live here once, for the API, the deployment page's form and a re-run."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ValidationError

from console.evaluation.choices import DatasetKind

# Which dataset kinds each deployment task can predict on (a NER dataset's tokens joined by spaces).
KINDS_FOR_TASK = {"text-classification": (DatasetKind.CLASSIFICATION,),
                  "token-classification": (DatasetKind.NER,)}


class PredictRefused(Exception):
    """Bad input for a predict job: the message, the field to fix and the HTTP status (400 or 404)."""

    def __init__(self, message: str, field: str, status: int = 400, code: str = "invalid"):
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code


def check(deployment_name: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The job's params from `{"dataset": name, "version": n}` (version optional: the latest) for deployment
    `deployment_name`; raises PredictRefused naming the field."""
    from console.deployments.models import Deployment
    from console.evaluation.models import Dataset

    deployment = Deployment.objects.select_related("model").filter(name=str(deployment_name)).first()
    if deployment is None:
        raise PredictRefused(f"No deployment named '{deployment_name}'.", "deployment", 404, "not_found")
    task = deployment.model.task
    if task not in KINDS_FOR_TASK:
        raise PredictRefused(f"'{deployment.name}' serves {task}; predicting on a dataset is for text- and "
                             "token-classification deployments.", "deployment", code="wrong_task")
    if deployment.stopped:
        raise PredictRefused(f"Deployment '{deployment.name}' is stopped; a maintainer can start it again.",
                             "deployment", 409, "deployment_stopped")
    name = data.get("dataset")
    if not isinstance(name, str) or not name:
        raise PredictRefused("'dataset' is required: the name of a registered dataset (GET /api/datasets/).",
                             "dataset")
    dataset = Dataset.objects.filter(name=name).first()
    if dataset is None:
        raise PredictRefused(f"No dataset named '{name}'; GET /api/datasets/ lists them.", "dataset", 404,
                             "not_found")
    fitting = KINDS_FOR_TASK[task]
    if dataset.kind not in fitting:
        raise PredictRefused(f"Dataset '{name}' is a {dataset.kind} dataset; a {task} deployment predicts on "
                             f"{' or '.join(fitting)} datasets.", "dataset", code="wrong_kind")
    number = data.get("version")
    if number in (None, ""):
        version = dataset.latest
        if version is None:
            raise PredictRefused(f"Dataset '{name}' has no version yet.", "version", 404, "not_found")
    else:
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PredictRefused("'version' must be a positive integer (a version number of the dataset).",
                                 "version") from None
        version = dataset.versions.filter(number=number).first()
        if version is None:
            raise PredictRefused(f"Dataset '{name}' has no version {number}.", "version", 404, "not_found")
    return {"deployment": deployment.name, "dataset": dataset.name, "version": version.number}


def validate(params: dict[str, Any], user: Any) -> dict[str, Any]:
    """The job kind's validate (a re-run checks again)."""
    try:
        return check(params.get("deployment"), params)
    except PredictRefused as exc:
        raise ValidationError({exc.field: [exc.message]}) from exc


def examples(kind: str, data: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(text, expected label or None) per example of a parsed dataset."""
    if kind == DatasetKind.CLASSIFICATION:
        return [(ex["text"], ex["label"]) for ex in data]
    return [(" ".join(ex["tokens"]), None) for ex in data]


def path_of(job_pk: int) -> Path:
    return Path(settings.TAUON_STORAGE) / "predictions" / f"job-{int(job_pk)}.jsonl"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, the distribution of predicted labels (entity types for NER) and, where every row has its expected
    label, the accuracy."""
    distribution: Counter[str] = Counter()
    for row in rows:
        if "entities" in row:
            distribution.update(e["entity_group"] for e in row["entities"])
        else:
            distribution[row["label"]] += 1
    labelled = [row for row in rows if row.get("expected") is not None]
    accuracy = (sum(row["label"] == row["expected"] for row in labelled) / len(labelled)
                if labelled and len(labelled) == len(rows) else None)
    return {"predictions": len(rows), "distribution": dict(sorted(distribution.items())), "accuracy": accuracy}


def write(job_pk: int, rows: list[dict[str, Any]]) -> None:
    """All the predictions at once (a temporary file renamed into place: never half a file); the chunks kept
    while the job ran go."""
    path = path_of(job_pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)
    chunks_path(job_pk).unlink(missing_ok=True)


# --- while the job runs: each answered chunk is kept, so a job run again (its worker died) resumes ---------
def chunks_path(job_pk: int) -> Path:
    return Path(settings.TAUON_STORAGE) / "predictions" / f"job-{int(job_pk)}.chunks.jsonl"


def keep(job_pk: int, start: int, results: list[Any]) -> None:
    """Append one answered chunk (the results of texts start, start+1, ...), on disk before it returns."""
    path = chunks_path(job_pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"start": start, "results": results}, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def kept(job_pk: int) -> list[tuple[int, list[Any]]]:
    """The chunks kept by earlier runs of this job: (start, results); a line cut short by a kill is skipped."""
    path = chunks_path(job_pk)
    if not path.exists():
        return []
    chunks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            chunk = json.loads(line)
        except ValueError:
            continue
        chunks.append((int(chunk["start"]), list(chunk["results"])))
    return chunks


def discard(job: Any) -> None:
    """The job's on_failed (failed or cancelled): no predictions, and no kept chunks, stay behind."""
    chunks_path(job.pk).unlink(missing_ok=True)


def read(job_pk: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path_of(job_pk).read_text(encoding="utf-8").splitlines() if line]


def as_csv(rows: list[dict[str, Any]]) -> str:
    """index, text, prediction, score, expected (a NER row's prediction: its entities as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", "text", "prediction", "score", "expected"])
    for row in rows:
        if "entities" in row:
            writer.writerow([row["index"], row["text"], json.dumps(row["entities"], ensure_ascii=False), "", ""])
        else:
            writer.writerow([row["index"], row["text"], row["label"], f"{row['score']:.6f}",
                             row.get("expected") or ""])
    return out.getvalue()


def chart(result: dict[str, Any]) -> dict[str, Any]:
    """The distribution as plotly data for the result page."""
    distribution = result.get("distribution") or {}
    return {"labels": list(distribution), "counts": list(distribution.values())}

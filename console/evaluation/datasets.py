"""Reading evaluation datasets: one parser per kind and format, each refusing bad input with the
line numbers of the first problems, so a user can fix the file in one go.

- text: `.txt`, UTF-8 prose;
- classification: `.jsonl` with `text` and `label`, or `.csv` with `text,label` columns;
- qa: `.jsonl` with `prompt` and `answer` (a string, or a list of acceptable answers);
- ner: `.jsonl` with `tokens` and `tags` (BIO or IOBES, one tag per token)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from typing import Any

from console.evaluation.choices import DatasetKind
from engine.evaluate import entities

FORMATS = {
    DatasetKind.TEXT: ("txt",),
    DatasetKind.CLASSIFICATION: ("jsonl", "csv"),
    DatasetKind.QA: ("jsonl",),
    DatasetKind.NER: ("jsonl",),
}
SHOWN_ERRORS = 10
TAG = re.compile(r"^(O|[BIES]-\S+)$")


class DatasetInvalid(Exception):
    """The file is not a valid dataset of its kind; `errors` are `line N: …` strings."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        shown = "; ".join(errors[:SHOWN_ERRORS])
        more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
        count = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
        super().__init__(f"The file has {count}: {shown}{more}.")


def format_of(kind: str, filename: str) -> str:
    """The file's format from its extension, checked against what the kind accepts."""
    allowed = FORMATS[DatasetKind(kind)]
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in allowed:
        names = " or ".join(f".{f}" for f in allowed)
        raise DatasetInvalid([f"a {kind} dataset is a {names} file, not '{filename}'"])
    return suffix


def decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DatasetInvalid([f"line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"]) from exc
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DatasetInvalid([f"line {line}: a NUL byte; this looks like a binary file, not text"])
    return text


def parse(kind: str, fmt: str, raw: bytes) -> tuple[Any, dict[str, Any]]:
    """The dataset's data (a str for text, else a list of examples) and its summary stats."""
    text = decode(raw)
    if kind == DatasetKind.TEXT:
        words = len(text.split())
        if not words:
            raise DatasetInvalid(["line 1: the file is empty; a text dataset needs some prose"])
        paragraphs = len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
        return text, {"examples": paragraphs, "characters": len(text), "words": words}
    rows = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    check = {DatasetKind.CLASSIFICATION: _classification, DatasetKind.QA: _qa, DatasetKind.NER: _ner}[DatasetKind(kind)]
    examples, errors = [], []
    for line, row in rows:
        if isinstance(row, str):  # a parse error already
            errors.append(f"line {line}: {row}")
            continue
        try:
            examples.append(check(row))
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
    if not examples and not errors:
        errors.append("line 1: the file holds no examples")
    if errors:
        raise DatasetInvalid(errors)
    return examples, {"examples": len(examples), **_summary(kind, examples)}


def _jsonl_rows(text: str) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((n, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:
            rows.append((n, "nested too deeply; each line must be a flat JSON object"))
            continue
        rows.append((n, value if isinstance(value, dict) else "each line must be a JSON object"))
    return rows


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in ("text", "label") if c not in header]
    if missing:
        found = ", ".join(header) if header else "nothing"
        raise DatasetInvalid([f"line 1: the header needs the columns text and label; found: {found}"])
    rows: list[tuple[int, Any]] = []
    try:
        for row in reader:
            if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        rows.append((reader.line_num, f"not valid CSV ({exc})"))
    return rows


def _text_field(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise ValueError(f"'{name}' is missing")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{name}' must be a non-empty string")
    return value


def _classification(row: dict[str, Any]) -> dict[str, Any]:
    text = _text_field(row, "text")
    label = row.get("label")
    if label is None or isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip():
        raise ValueError("'label' must be a non-empty string or an integer" if label is not None
                         else "'label' is missing")
    return {"text": text, "label": str(label).strip()}


def _qa(row: dict[str, Any]) -> dict[str, Any]:
    prompt = _text_field(row, "prompt")
    answer = row.get("answer")
    if answer is None:
        raise ValueError("'answer' is missing")
    answers = [answer] if isinstance(answer, str) else answer
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("'answer' must be a non-empty string or a list of them (acceptable answers)")
    return {"prompt": prompt, "answer": answer}


def _ner(row: dict[str, Any]) -> dict[str, Any]:
    tokens, tags = row.get("tokens"), row.get("tags")
    for name, value in (("tokens", tokens), ("tags", tags)):
        if value is None:
            raise ValueError(f"'{name}' is missing")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"'{name}' must be a non-empty list of non-empty strings")
    assert isinstance(tokens, list) and isinstance(tags, list)
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags; give one tag per token")
    for i, tag in enumerate(tags, start=1):
        if not TAG.match(tag):
            raise ValueError(f"tag {i} '{tag}' is not O or B-/I-/E-/S- followed by a type (e.g. B-PER)")
    return {"tokens": tokens, "tags": tags}


def _summary(kind: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
    if kind == DatasetKind.CLASSIFICATION:
        return {"labels": dict(sorted(Counter(ex["label"] for ex in examples).items()))}
    if kind == DatasetKind.NER:
        types = Counter(kind for ex in examples for kind, _, _ in entities(ex["tags"]))
        return {"tokens": sum(len(ex["tokens"]) for ex in examples), "entity_types": dict(sorted(types.items()))}
    return {}

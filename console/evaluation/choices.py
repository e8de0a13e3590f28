from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.template.defaultfilters import filesizeformat
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


class DatasetKind(models.TextChoices):
    TEXT = "text", _("Text (language modelling)")
    CLASSIFICATION = "classification", _("Classification (text, label)")
    QA = "qa", _("Question answering (prompt, answer)")
    NER = "ner", _("Named entities (tokens, tags)")


# Which model task each kind of dataset evaluates.
TASK_OF_KIND = {
    DatasetKind.TEXT: "text-generation",
    DatasetKind.QA: "text-generation",
    DatasetKind.CLASSIFICATION: "text-classification",
    DatasetKind.NER: "token-classification",
}


@dataclass(frozen=True, slots=True)
class Metric:
    label: str | Promise
    lower_is_better: bool
    unit: str = ""  # shown with the value and on chart axes

    @property
    def heading_unit(self) -> str:
        """The unit a column heading or axis title adds: none for sizes (shown as MB, GB) or rates (their label
        says it already: Tokens/s)."""
        return "" if self.unit in ("", "bytes") or "/" in self.unit else self.unit


METRICS = {
    "perplexity": Metric(_("Perplexity"), True),
    "exact_match": Metric(_("Exact match"), False),
    "token_f1": Metric(_("Token F1"), False),
    "answer_in_output": Metric(_("Answer in output"), False),
    "accuracy": Metric(_("Accuracy"), False),
    "macro_f1": Metric(_("Macro F1"), False),
    "entity_f1": Metric(_("Entity F1"), False),
    "entity_precision": Metric(_("Entity precision"), False),
    "entity_recall": Metric(_("Entity recall"), False),
    "tokens_per_s": Metric(_("Tokens/s"), False, "tok/s"),
    "examples_per_s": Metric(_("Examples/s"), False, "ex/s"),
    "ttft_s": Metric(_("Time to first token"), True, "s"),
    "peak_memory_bytes": Metric(_("Peak memory"), True, "bytes"),
}
# The quality metrics of each kind, first = the headline one; latency and memory come with every kind.
QUALITY = {
    DatasetKind.TEXT: ["perplexity"],
    DatasetKind.QA: ["token_f1", "exact_match", "answer_in_output"],
    DatasetKind.CLASSIFICATION: ["accuracy", "macro_f1"],
    DatasetKind.NER: ["entity_f1", "entity_precision", "entity_recall"],
}
SPEED = {
    DatasetKind.TEXT: ["tokens_per_s", "ttft_s", "peak_memory_bytes"],
    DatasetKind.QA: ["tokens_per_s", "ttft_s", "peak_memory_bytes"],
    DatasetKind.CLASSIFICATION: ["examples_per_s", "tokens_per_s", "peak_memory_bytes"],
    DatasetKind.NER: ["examples_per_s", "tokens_per_s", "peak_memory_bytes"],
}
GATE_METRICS = [(name, METRICS[name].label) for name in METRICS]


def format_metric(name: str, value: Any) -> str:
    """One metric's value for a page, formatted for its kind: bytes as sizes, counts with separators, rates and
    seconds rounded, a large perplexity without decimals; "—" when there is none."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    if name.endswith("_bytes"):
        return str(filesizeformat(value))
    if name == "parameter_count":
        return f"{value:,}"
    if name.endswith("_per_s"):
        return f"{value:.1f}"
    if name.endswith("_s"):
        return f"{value:.3f}"
    if name == "perplexity":
        return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"
    return f"{value:.4f}"


def plain(value: float) -> str:
    """A number as people write it, never in scientific notation: 49,540.6 · 12.35 · 0.00421."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.1f}".removesuffix(".0")
    decimals = max(2, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")

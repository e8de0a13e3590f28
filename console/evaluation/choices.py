from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class DatasetKind(models.TextChoices):
    TEXT = "text", "Text (language modelling)"
    CLASSIFICATION = "classification", "Classification (text, label)"
    QA = "qa", "Question answering (prompt, answer)"
    NER = "ner", "Named entities (tokens, tags)"


# Which model task each kind of dataset evaluates.
TASK_OF_KIND = {
    DatasetKind.TEXT: "text-generation",
    DatasetKind.QA: "text-generation",
    DatasetKind.CLASSIFICATION: "text-classification",
    DatasetKind.NER: "token-classification",
}


@dataclass(frozen=True, slots=True)
class Metric:
    label: str
    lower_is_better: bool
    unit: str = ""


METRICS = {
    "perplexity": Metric("Perplexity", True),
    "exact_match": Metric("Exact match", False),
    "token_f1": Metric("Token F1", False),
    "answer_in_output": Metric("Answer in output", False),
    "accuracy": Metric("Accuracy", False),
    "macro_f1": Metric("Macro F1", False),
    "entity_f1": Metric("Entity F1", False),
    "entity_precision": Metric("Entity precision", False),
    "entity_recall": Metric("Entity recall", False),
    "tokens_per_s": Metric("Tokens/s", False, "tok/s"),
    "examples_per_s": Metric("Examples/s", False, "ex/s"),
    "ttft_s": Metric("Time to first token", True, "s"),
    "peak_memory_bytes": Metric("Peak memory", True, "bytes"),
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

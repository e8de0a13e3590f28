"""The version page's "Fine-tune" and "Compress" forms. They only gather the fields (a blank field is left
out, so the kind's default applies) and start the job through console.jobs.forms.start_job: the same
validate function as POST /api/jobs/ decides, and its refusal is shown next to the field it names."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from console.evaluation.choices import TASK_OF_KIND, DatasetKind
from console.evaluation.models import Dataset
from console.jobs.forms import start_job
from console.jobs.models import Job
from console.registry.finetuning import DEFAULT_MIN_STEPS, KIND_OF_TASK
from console.registry.models import ModelVersion
from engine import compress_methods as compress
from engine.finetune import METHODS as FINETUNE_METHODS
from engine.finetune import FinetuneConfig


def _dataset_choices(kinds: list[str], blank: Any = None) -> list[Any]:
    """Datasets of these kinds, grouped by kind in this order, each labelled with its latest version."""
    datasets = Dataset.objects.filter(kind__in=kinds).prefetch_related("versions")
    groups = []
    for kind in kinds:
        options = [(d.name, f"{d.name} (v{max(v.number for v in d.versions.all())})")
                   for d in datasets if d.kind == kind and d.versions.all()]
        if options:
            groups.append((DatasetKind(kind).label, options))
    return ([("", blank)] if blank is not None else []) + groups


def _default(name: str) -> Any:
    return FinetuneConfig.__dataclass_fields__[name].default


class JobForm(forms.Form):
    kind = ""

    def __init__(self, version: ModelVersion, *args: Any, **kwargs: Any):
        super().__init__(*args, prefix=self.kind, **kwargs)  # two forms on one page: finetune-dataset, …
        self.version = version

    def params(self) -> dict[str, Any]:
        chosen = {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}
        return {"model": self.version.model.name, "version": self.version.number, **chosen}

    def start(self, user: Any) -> Job | None:
        """The started job, or None with the errors on the form."""
        if not self.is_valid():
            return None
        return start_job(self, self.kind, self.params(), user)


class FinetuneForm(JobForm):
    kind = "finetune"

    dataset = forms.ChoiceField(label=_("Dataset"),
                                help_text=_("Its latest version; the held-out part (eval fraction) is not trained on."))
    method = forms.ChoiceField(label=_("Method"), choices=[(m, m) for m in FINETUNE_METHODS], initial="lora")
    task = forms.ChoiceField(label=_("Task"), choices=[(t, t) for t in KIND_OF_TASK])
    target_model = forms.SlugField(max_length=100, required=False, label=_("Target model"),
                                   help_text=_("The child becomes its next version (created if new)."))
    epochs = forms.IntegerField(required=False, min_value=1, label=_("Epochs"),
                                help_text=_("Blank: chosen from the dataset size, enough for the minimum steps."))
    min_steps = forms.IntegerField(required=False, min_value=1, label=_("Minimum steps"),
                                   help_text=_("Optimizer steps the run makes at least when epochs are blank; a "
                                               "small dataset gets more epochs instead of an untrained child."))
    max_steps = forms.IntegerField(required=False, min_value=0, label=_("Max steps"),
                                   help_text=_("Optimizer steps; above 0 it overrides epochs."))
    learning_rate = forms.FloatField(required=False, label=_("Learning rate"))
    batch_size = forms.IntegerField(required=False, min_value=1, label=_("Batch size"))
    max_length = forms.IntegerField(required=False, min_value=1, label=_("Max length"),
                                    help_text=_("Tokens per example."))
    seed = forms.IntegerField(required=False, label=_("Seed"))
    eval_fraction = forms.FloatField(required=False, label=_("Eval fraction"))
    lora_r = forms.IntegerField(required=False, min_value=1, label=_("LoRA rank"))

    def __init__(self, version: ModelVersion, *args: Any, **kwargs: Any):
        super().__init__(version, *args, **kwargs)
        model = version.model
        fitting = KIND_OF_TASK.get(model.task)
        kinds = [fitting] if fitting else []
        kinds += [k for k in KIND_OF_TASK.values() if k not in kinds]
        self.fields["dataset"].choices = _dataset_choices(kinds)
        if not self.fields["dataset"].choices:
            self.fields["dataset"].help_text = _("No dataset to train on yet: upload a question-answering, "
                                                 "classification or named-entity dataset on the Datasets page.")
        if model.task in KIND_OF_TASK:
            self.fields["task"].initial = model.task
        self.fields["target_model"].initial = model.name
        for name in ("epochs", "max_steps", "learning_rate", "batch_size", "max_length", "seed", "eval_fraction",
                     "lora_r"):
            self.fields[name].widget.attrs["placeholder"] = str(_default(name))
        self.fields["epochs"].widget.attrs["placeholder"] = _("auto")
        self.fields["min_steps"].widget.attrs["placeholder"] = str(DEFAULT_MIN_STEPS)


class CompressForm(JobForm):
    kind = "compress"

    method = forms.ChoiceField(label=_("Method"))
    sparsity = forms.FloatField(required=False, label=_("Sparsity"),
                                help_text=_("Pruning methods only, e.g. 0.5 (2:4 is always 0.5)."))
    structure = forms.ChoiceField(required=False, label=_("Structure"))
    calibration_dataset = forms.ChoiceField(required=False, label=_("Calibration dataset"),
                                            help_text=_("Text, for Wanda's activation norms or w8a8's activation "
                                                        "ranges."))
    dataset = forms.ChoiceField(required=False, label=_("Evaluate on"),
                                help_text=_("Optional: compare parent and child on this dataset."))

    def __init__(self, version: ModelVersion, *args: Any, **kwargs: Any):
        super().__init__(version, *args, **kwargs)
        self.fields["method"].choices = [(m, m) for m in compress.METHODS]  # whatever the engine supports now
        self.fields["structure"].choices = [("", _("— (pruning: unstructured)"))] + [(s, s) for s in compress.STRUCTURES]
        self.fields["sparsity"].widget.attrs["placeholder"] = "0.5"
        self.fields["calibration_dataset"].choices = _dataset_choices([DatasetKind.TEXT], blank=_("— (none)"))
        kinds = [k for k, task in TASK_OF_KIND.items() if task == version.model.task]
        self.fields["dataset"].choices = _dataset_choices(kinds, blank=_("— (no evaluation)"))

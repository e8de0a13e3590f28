"""Forms of the registry pages. Saving goes through the model methods, with the audit record."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from console.registry.choices import VersionStatus
from console.registry.models import Alias, AliasEvent, Model, ModelVersion


class RegisterModelForm(forms.ModelForm):
    class Meta:
        model = Model
        fields = ["name", "task", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        labels = {"name": _("Name"), "task": _("Task"), "description": _("Description")}
        help_texts = {"name": _("Letters, digits, '-' and '_' only, e.g. 'support-bot'.")}
        error_messages = {"name": {"unique": _("A model with this name already exists; choose another name."),
                                   "invalid": _("Use only letters, digits, '-' and '_' in the name.")}}

    def save_for(self, actor: Any) -> Model:
        data = self.cleaned_data
        self.instance = Model.register(actor, name=data["name"], task=data["task"], description=data["description"])
        return self.instance


class PromoteForm(forms.Form):
    """Point an alias at a ready version (one atomic move with history and audit)."""

    version = forms.TypedChoiceField(coerce=int, label=_("Version"))
    alias = forms.SlugField(max_length=50, label=_("Alias"), initial="production",
                            error_messages={"invalid": _("An alias is a slug: letters, digits, '-' and '_' "
                                                         "(e.g. 'production').")},
                            widget=forms.TextInput(attrs={"list": "alias-names"}))
    comment = forms.CharField(required=False, max_length=500, label=_("Comment"))
    override_reason = forms.CharField(required=False, max_length=500, label=_("Override the gate (admins): reason"))

    def __init__(self, model: Model, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model = model
        versions = model.versions.order_by("-number")
        self.fields["version"].choices = [
            (v.number, f"v{v.number}" + ("" if v.status == VersionStatus.READY else f" ({v.status})")) for v in versions
        ]
        ready = [v for v in versions if v.status == VersionStatus.READY]
        if ready and not self.is_bound:
            self.initial["version"] = ready[0].number

    def promote(self, actor: Any) -> AliasEvent | None:
        """Move the alias; on a refusal put the reason on the form and return None."""
        version = self.model.versions.get(number=self.cleaned_data["version"])
        try:
            return Alias.move(self.model, self.cleaned_data["alias"], version, actor, comment=self.cleaned_data["comment"],
                              override_reason=self.cleaned_data["override_reason"])
        except ValidationError as exc:
            self.add_error("version" if hasattr(exc, "error_dict") and "version" in exc.error_dict else None, exc.messages)
            return None


class CommentForm(forms.Form):
    comment = forms.CharField(required=False, max_length=500)


class ConfigForm(forms.Form):
    config = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "class": "code", "spellcheck": "false"}),
                             required=False, label=_("Config (JSON)"))

    @staticmethod
    def render(config: dict[str, Any]) -> str:
        return json.dumps(config, indent=2, sort_keys=True)

    def clean_config(self) -> dict[str, Any]:
        text = self.cleaned_data["config"].strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(_("This is not valid JSON: %(error)s at line %(line)s, column %(column)s.")
                                  % {"error": exc.msg, "line": exc.lineno, "column": exc.colno}) from exc
        if not isinstance(value, dict):
            raise ValidationError(_("The config must be a JSON object, e.g. %(example)s.")
                                  % {"example": '{"sampling": {"temperature": 0.7}}'})
        return value

    def save_to(self, version: ModelVersion, actor: Any) -> bool:
        try:
            version.update_config(self.cleaned_data["config"], actor)
        except ValidationError as exc:
            self.add_error("config", exc.messages)
            return False
        return True

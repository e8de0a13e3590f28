"""Starting a job from a console form: the same path as POST /api/jobs/ (Job.start: the kind's own validate
function, then enqueue and audit), with the kind's refusal put on the form, next to the field it names."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.forms.utils import pretty_name
from rest_framework.exceptions import ValidationError as ApiValidationError

from console.jobs.models import Job


def refusals(exc: DjangoValidationError | ApiValidationError) -> list[tuple[str | None, str]]:
    """(field, message) pairs of a validate function's error; nested fields as 'config.engine'."""
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
    else:
        detail = exc.detail

    def walk(value: Any, field: str | None) -> list[tuple[str | None, str]]:
        if isinstance(value, dict):
            return [pair for key, sub in value.items()
                    for pair in walk(sub, str(key) if field in (None, "non_field_errors", "__all__")
                                     else f"{field}.{key}")]
        if isinstance(value, list | tuple):
            return [pair for item in value for pair in walk(item, field)]
        return [(None if field in ("non_field_errors", "__all__") else field, str(value))]

    return walk(detail, None)


def in_form_words(form: forms.Form, message: str) -> str:
    """The API's field names in a message (`learning_rate`) as the form labels them ("Learning rate")."""
    for name, field in form.fields.items():
        if "_" in name:  # API identifiers; plain words like "dataset" read the same either way
            message = re.sub(rf"\b{name}\b", str(field.label or pretty_name(name)), message)
    return message


def start_job(form: forms.Form, kind: str, params: dict[str, Any], user: Any) -> Job | None:
    """Start the job, or put the kind's validation errors on `form` and return None (nothing is created).

    An error on a field the form shows goes next to it; others (e.g. the version) go above the form,
    named."""
    try:
        return Job.start(kind, params, user)
    except (DjangoValidationError, ApiValidationError) as exc:
        for field, api_message in refusals(exc):
            message = in_form_words(form, api_message)
            if field in form.fields:
                form.add_error(field, message)
            else:
                form.add_error(None, f"{field}: {message}" if field else message)
        return None

from __future__ import annotations

from datetime import datetime

from django import forms
from django.utils import timezone


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. 'ci' or 'notebook'.")
    expires_at = forms.DateTimeField(required=False, label="Expires at", help_text="Optional; leave empty for no expiry.",
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean_expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_at"]
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return value

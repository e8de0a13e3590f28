from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from console.accounts.choices import Role
from console.accounts.models import User
from console.audit.models import record


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"), help_text=_("What the key is for, e.g. 'ci' or 'notebook'."))
    expires_at = forms.DateTimeField(required=False, label=_("Expires at"),
                                     help_text=_("Optional; leave empty for no expiry."),
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean_expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_at"]
        if value is not None and value <= timezone.now():
            raise forms.ValidationError(_("The expiry must be in the future."))
        return value


class NewUserForm(UserCreationForm):
    """An admin creates a user with a role and a first password (Django's checks), audited like the admin site."""

    role = forms.ChoiceField(choices=Role.choices, initial=Role.USER, label=_("Role"))

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "role")

    def save_by(self, actor: Any) -> User:
        with transaction.atomic():
            user = self.save(commit=False)
            user.role = self.cleaned_data["role"]
            user.save()
            record(actor, "user.create", user, username=user.username, before=None,
                   after={"role": user.role, "is_active": user.is_active})
        return user


class AccessForm(forms.Form):
    """Role and sign-in of an existing user. An admin cannot lock themselves out here."""

    role = forms.ChoiceField(choices=Role.choices, label=_("Role"))
    is_active = forms.BooleanField(required=False, label=_("Active"),
                                   help_text=_("An inactive user cannot sign in, and their API keys are refused."))

    def __init__(self, target: User, actor: Any, *args: Any, **kwargs: Any):
        super().__init__(*args, initial={"role": target.role, "is_active": target.is_active}, **kwargs)
        self.target, self.actor = target, actor

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.target.pk == self.actor.pk and not self.target.is_superuser and (
                data.get("role") != Role.ADMIN or not data.get("is_active")):
            raise forms.ValidationError(_("You cannot demote or deactivate yourself; ask another admin."))
        return data

    def save(self) -> bool:
        return self.target.change_access(self.actor, role=self.cleaned_data["role"],
                                         is_active=self.cleaned_data["is_active"])

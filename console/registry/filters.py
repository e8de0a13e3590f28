from __future__ import annotations

import django_filters

from console.registry.choices import Task, VersionFormat, VersionSource, VersionStatus
from console.registry.models import Model, ModelVersion


class ModelFilter(django_filters.FilterSet):
    task = django_filters.ChoiceFilter(choices=Task.choices)
    owner = django_filters.CharFilter(field_name="owner__username", help_text="Owner's username.")
    search = django_filters.CharFilter(field_name="name", lookup_expr="icontains", help_text="Part of the model name.")

    class Meta:
        model = Model
        fields = ["task", "owner", "search"]


class VersionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=VersionStatus.choices)
    source = django_filters.ChoiceFilter(choices=VersionSource.choices)
    format = django_filters.ChoiceFilter(choices=VersionFormat.choices)

    class Meta:
        model = ModelVersion
        fields = ["status", "source", "format"]

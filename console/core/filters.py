"""Query filters that refuse what their schema refuses. django-filter ignores a value it cannot read (a
boolean `null`, an empty date), which answers a different question than the one asked; here such a
value is a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

BOOLEANS = {"true", "false", "True", "False"}


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (NumberFilter takes decimals)."""

    field_class = django_filters.fields.forms.IntegerField


class StrictFilterBackend(DjangoFilterBackend):
    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            for name, filter_ in filterset.filters.items():
                for value in request.query_params.getlist(name):
                    check(name, filter_, value)
        return filterset


def check(name: str, filter_: django_filters.Filter, value: str) -> None:
    if isinstance(filter_, django_filters.CharFilter) and not isinstance(filter_, django_filters.ChoiceFilter):
        return
    if value == "":
        raise ValidationError({name: [f"Give a value or leave '{name}' out."]})
    if isinstance(filter_, django_filters.BooleanFilter) and value not in BOOLEANS:
        raise ValidationError({name: [f"Must be true or false; got '{value}'."]})

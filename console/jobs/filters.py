from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from console.jobs.choices import ACTIVE, JobStatus
from console.jobs.models import Job


class JobFilter(django_filters.FilterSet):
    kind = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    created_by = django_filters.CharFilter(field_name="created_by__username", help_text="Username of the creator.")
    active = django_filters.BooleanFilter(method="filter_active", help_text="true: queued or running; false: ended.")
    model = django_filters.CharFilter(field_name="params__model", help_text="Jobs whose params name this model.")

    class Meta:
        model = Job
        fields = ["kind", "status", "created_by", "active", "model"]

    def filter_active(self, queryset: QuerySet[Job], name: str, value: bool) -> QuerySet[Job]:
        return queryset.filter(status__in=ACTIVE) if value else queryset.exclude(status__in=ACTIVE)

from __future__ import annotations

import django_filters

from console.jobs.choices import JobStatus
from console.jobs.models import Job


class JobFilter(django_filters.FilterSet):
    kind = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    created_by = django_filters.CharFilter(field_name="created_by__username", help_text="Username of the creator.")

    class Meta:
        model = Job
        fields = ["kind", "status", "created_by"]

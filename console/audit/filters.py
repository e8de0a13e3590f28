from __future__ import annotations

import django_filters

from console.audit.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor__username", help_text="Username of who made the change.")
    model = django_filters.CharFilter(field_name="model_name", help_text="Name of the registry model concerned.")
    action = django_filters.CharFilter(help_text="Exact action, e.g. 'alias.set'.")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith",
                                              help_text="Actions starting with this, e.g. 'alias.'.")
    target_type = django_filters.CharFilter(help_text="e.g. 'model', 'modelversion', 'alias', 'apikey', 'job'.")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["actor", "model", "action", "action_prefix", "target_type", "since", "until"]

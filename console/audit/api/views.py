from __future__ import annotations

from rest_framework import mixins
from rest_framework.exceptions import NotFound
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import IsMaintainer
from console.audit.api.serializers import AuditEventSerializer
from console.audit.filters import AuditEventFilter
from console.audit.models import AuditEvent


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """The audit log, newest first. Maintainers and admins only."""

    queryset = AuditEvent.objects.select_related("actor")
    serializer_class = AuditEventSerializer
    permission_classes = [IsMaintainer]
    filterset_class = AuditEventFilter
    ordering_fields = ["created_at", "action"]

    def get_object(self) -> AuditEvent:
        event = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if event is None:
            raise NotFound(f"No audit event #{self.kwargs['pk']}.")
        return event

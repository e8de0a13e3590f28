"""The audit log page: every recorded change, filtered by user, model and action."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console.accounts.choices import Role
from console.accounts.decorators import role_required
from console.audit.models import AuditEvent


@role_required(Role.MAINTAINER)
def event_list(request: HttpRequest) -> HttpResponse:
    filters = {name: request.GET.get(name, "").strip() for name in ("user", "model", "action")}
    events = AuditEvent.objects.select_related("actor")
    if filters["user"]:
        events = events.filter(actor__username=filters["user"])
    if filters["model"]:
        events = events.filter(model_name=filters["model"])
    if filters["action"]:
        # "alias" matches every alias.* action; "alias.set" matches exactly that one.
        events = events.filter(action=filters["action"]) if "." in filters["action"] \
            else events.filter(action__startswith=f"{filters['action']}.")
    choices = AuditEvent.objects.order_by()
    context = {
        "page": Paginator(events, 50).get_page(request.GET.get("page")),
        "filters": filters,
        "users": choices.exclude(actor=None).values_list("actor__username", flat=True).distinct().order_by("actor__username"),
        "model_names": choices.exclude(model_name="").values_list("model_name", flat=True).distinct().order_by("model_name"),
        "actions": choices.values_list("action", flat=True).distinct().order_by("action"),
    }
    return render(request, "audit/event_list.html", context)

"""Account pages: log in/out (Django's views) and API keys (list, create once-shown, revoke)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from console.accounts.forms import ApiKeyForm
from console.accounts.models import ApiKey


def visible_keys(user):  # type: ignore[no-untyped-def]
    keys = ApiKey.objects.select_related("user")
    return keys if user.is_admin else keys.filter(user=user)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm()
    created = raw = None
    status = 200
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            created, raw = ApiKey.issue(request.user, form.cleaned_data["name"], form.cleaned_data["expires_at"],
                                        actor=request.user)
            form = ApiKeyForm()  # the raw key is shown in this response only, never again
        else:
            status = 400
    context = {"keys": visible_keys(request.user), "form": form, "created": created, "raw_key": raw}
    return render(request, "accounts/key_list.html", context, status=status)


@login_required
@require_POST
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(visible_keys(request.user), pk=pk)
    if key.revoke(actor=request.user):
        messages.success(request, f"Revoked key '{key.name}' ({key.prefix}…). Requests using it are now refused.")
    else:
        messages.info(request, f"Key '{key.name}' was already revoked.")
    return redirect("key-list")

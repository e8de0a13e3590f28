"""Account pages: log in/out (Django's views), API keys (list, create once-shown, revoke) and, for admins,
users (list, create, role, deactivate, their keys)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from console.accounts.choices import Role
from console.accounts.decorators import role_required
from console.accounts.forms import AccessForm, ApiKeyForm, NewUserForm
from console.accounts.models import ApiKey, User


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
            messages.success(request, _("Created key '%(name)s'. Copy it now: it is shown only once.")
                             % {"name": created.name})
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
        messages.success(request, _("Revoked key '%(name)s' (%(prefix)s…). Requests using it are now refused.")
                         % {"name": key.name, "prefix": key.prefix})
    else:
        messages.info(request, _("Key '%(name)s' was already revoked.") % {"name": key.name})
    back = request.POST.get("next", "")
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect("key-list")


@never_cache
@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def user_list(request: HttpRequest) -> HttpResponse:
    form = NewUserForm()
    status = 200
    if request.method == "POST":
        form = NewUserForm(request.POST)
        if form.is_valid():
            created = form.save_by(request.user)
            messages.success(request, _("Created user '%(name)s' (%(role)s).")
                             % {"name": created.username, "role": created.get_role_display()})
            return redirect("user-detail", pk=created.pk)
        status = 400
    query = request.GET.get("q", "").strip()
    users = User.objects.annotate(active_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True)))
    if query:
        users = users.filter(username__icontains=query)
    context = {"users": users.order_by("username"), "form": form, "q": query}
    return render(request, "accounts/user_list.html", context, status=status)


@never_cache
@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    target = get_object_or_404(User, pk=pk)
    form = AccessForm(target, request.user)
    status = 200
    if request.method == "POST":
        form = AccessForm(target, request.user, request.POST)
        if form.is_valid():
            if form.save():
                messages.success(request, _("Saved: %(name)s is now %(role)s, %(state)s.") % {
                    "name": target.username, "role": target.get_role_display(),
                    "state": _("active") if target.is_active else _("deactivated")})
            else:
                messages.info(request, _("Nothing changed."))
            return redirect("user-detail", pk=target.pk)
        status = 400
    context = {"target": target, "form": form, "keys": target.api_keys.all()}  # type: ignore[attr-defined]
    return render(request, "accounts/user_detail.html", context, status=status)

"""`python manage.py create_api_key USER [--name N] [--expires-days D]`: the raw key is the LAST line, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from console.accounts.models import ApiKey, User
from console.audit.models import record


class Command(BaseCommand):
    help = "Create an API key for USER and print it (as the last line). It is stored hashed and never shown again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USER")
        parser.add_argument("--name", default="cli", help="What the key is for (default: cli).")
        parser.add_argument("--expires-days", type=int, default=None, help="Days until it expires (default: never).")

    def handle(self, *args: Any, username: str, name: str, expires_days: int | None, **options: Any) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named '{username}'; create one with `manage.py createsuperuser` or the admin.")
        if not user.is_active:
            raise CommandError(f"User '{username}' is inactive; a key for it would not authenticate.")
        if not name.strip() or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be 1 or more; leave it out for a key that never expires.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        with transaction.atomic():
            key, raw = ApiKey.issue(user, name, expires_at)
            record(None, "apikey.create", key, user=user.username, name=key.name, prefix=key.prefix,
                   expires_at=expires_at.isoformat() if expires_at else None, via="create_api_key")
        expiry = f"expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "never expires"
        self.stdout.write(f"Created API key '{key.name}' (prefix {key.prefix}, {expiry}) for {user.username} "
                          f"with role {user.effective_role}.")
        self.stdout.write("It is shown only now; store it safely. Send it as 'Authorization: Bearer <key>'.")
        self.stdout.write(raw)

"""`python manage.py ensure_admin [--username NAME]`: create an admin user when there is none.

The generated password is printed once, on the line that starts with `Admin password:`; an
existing admin is left alone and no password is shown (reset one with `manage.py changepassword`)."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Q

from console.accounts.choices import Role
from console.accounts.models import User
from console.audit.models import record

PASSWORD_LINE = "Admin password:"


class Command(BaseCommand):
    help = "Create an admin user with a generated password (printed once) unless an admin already exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="name of the admin to create (default: admin)")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        with transaction.atomic():
            existing = (User.objects.select_for_update().filter(is_active=True)
                        .filter(Q(role=Role.ADMIN) | Q(is_superuser=True)).order_by("pk").first())
            if existing is not None:
                self.stdout.write(f"Admin user: {existing.username} (already exists; its password was shown when "
                                  f"it was created; reset it with `python manage.py changepassword {existing.username}`)")
                return
            if User.objects.filter(username=username).exists():
                self.stderr.write(f"A user named '{username}' exists but is not an admin; making it one.")
                user = User.objects.get(username=username)
                user.role, user.is_staff, user.is_superuser, user.is_active = Role.ADMIN, True, True, True
            else:
                user = User(username=username, role=Role.ADMIN, is_staff=True, is_superuser=True)
            password = secrets.token_urlsafe(12)
            user.set_password(password)
            user.save()
            record(None, "user.create_admin", user, username=user.username, via="ensure_admin")
        self.stdout.write(f"Admin user: {user.username} (created)")
        self.stdout.write(f"{PASSWORD_LINE} {password}  (shown only now; change it after you log in)")

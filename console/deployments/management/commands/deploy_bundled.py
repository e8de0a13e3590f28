"""`python manage.py deploy_bundled`: serve each imported bundled model under its own name.

Idempotent. A bundled model whose 'production' alias points nowhere gets it moved to its newest
ready bundled version; then a deployment that follows 'production' is created if none has its name."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from console.deployments.models import Deployment
from console.registry.bundled import BUNDLED
from console.registry.choices import VersionSource, VersionStatus
from console.registry.models import Alias, Model


class Command(BaseCommand):
    help = "Create deployments for the bundled models (named like the models, following 'production')."

    def handle(self, *args: Any, **options: Any) -> None:
        for bundled in BUNDLED:
            model = Model.objects.filter(name=bundled.name).first()
            version = model and model.versions.filter(source=VersionSource.BUNDLED,
                                                      status=VersionStatus.READY).order_by("-number").first()
            if model is None or version is None:
                self.stdout.write(f"{bundled.name}: no ready version yet; run import_bundled first.")
                continue
            if not Alias.objects.filter(model=model, name="production").exists():
                Alias.move(model, "production", version, actor=None, comment="bundled model, deployed by `up`")
            if Deployment.objects.filter(name=bundled.name).exists():
                self.stdout.write(f"{bundled.name}: deployment exists.")
                continue
            Deployment.create(None, name=bundled.name, model=model, alias="production")
            self.stdout.write(f"{bundled.name}: deployed (follows 'production', version {version.number}).")

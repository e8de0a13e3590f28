"""`python manage.py import_datasets`: register the built-in datasets (data files in
console/evaluation/data). Idempotent: a dataset whose latest version has the same sha256 is left alone;
a changed file becomes its next version."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from console.evaluation.models import Dataset, DatasetRefused, DatasetVersion

DATA = Path(__file__).resolve().parents[2] / "data"
BUILTIN = [  # name, kind, file, description
    ("plain-english", "text", "plain-english.txt",
     "Plain English prose written for Tauon (a mountain weather station), about 1,250 SmolLM2 tokens: perplexity."),
    ("simple-qa", "qa", "simple-qa.jsonl",
     "Thirty short questions with one-word or one-number answers, for small instruct models: exact match and F1."),
]


class Command(BaseCommand):
    help = "Register the built-in evaluation datasets (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, kind, filename, description in BUILTIN:
            raw = (DATA / filename).read_bytes()
            dataset = Dataset.objects.filter(name=name).first()
            latest = dataset.latest if dataset else None
            if latest and latest.sha256 == hashlib.sha256(raw).hexdigest():
                self.stdout.write(f"{latest}: up to date")
                continue
            try:
                version = DatasetVersion.add(name, kind, filename, raw, None, description=description, builtin=True)
            except DatasetRefused as exc:  # e.g. a user's dataset of another kind took the name
                self.stderr.write(f"Built-in dataset '{name}' not imported: {exc.message}")
                continue
            self.stdout.write(self.style.SUCCESS(f"{version}: {version.examples} examples, sha256 {version.sha256[:12]}…"))

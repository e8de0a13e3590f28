"""The layers stay apart: the engine imports no web framework, the web process imports no torch, and
the benchmarks (shipped in the image) import nothing from the tests (which are not).

Each check imports in a fresh interpreter (this test process has long since loaded everything) and
walks the whole package, so a new module that breaks the rule fails here, not in production RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FRAMEWORKS = {"django", "celery", "kombu", "rest_framework", "drf_spectacular", "console", "workers"}
# What the web process must never hold: libtorch alone is ~200 MB of resident memory.
TENSOR_LIBRARIES = {"torch", "transformers", "captum", "peft", "torchao", "accelerate"}


def run_isolated(script: str, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_engine_and_every_engine_module_import_without_django_or_celery():
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import engine\n"
        "names = [m.name for m in pkgutil.walk_packages(engine.__path__, 'engine.')]\n"
        "for name in names: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FRAMEWORKS)!r})\n"
        "print(json.dumps({'modules': names, 'frameworks': bad}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    report = run_isolated(script, env)
    assert report["modules"], "found no engine modules to import"
    assert report["frameworks"] == []


def test_the_web_process_and_every_console_module_import_without_torch(tmp_path: Path):
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import django\n"
        "django.setup()\n"
        "import console\n"
        "names = ['console.asgi', 'console.urls']\n"
        "names += [m.name for m in pkgutil.walk_packages(console.__path__, 'console.')]\n"
        f"libraries = {sorted(TENSOR_LIBRARIES)!r}\n"
        "def loaded(): return sorted({m.split('.')[0] for m in sys.modules} & set(libraries))\n"
        "first = {'django.setup()': loaded()} if loaded() else {}\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "    if loaded() and not first: first = {name: loaded()}\n"
        "print(json.dumps({'modules': names, 'tensor_libraries': loaded(), 'first_loaded_by': first}))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "TAUON_STORAGE": str(tmp_path / "storage")}
    report = run_isolated(script, env)
    assert len(report["modules"]) > 50, report["modules"]  # the walk found the apps, views and commands
    assert report["tensor_libraries"] == [], f"loaded by (importing) {report['first_loaded_by']}"


def test_the_benchmarks_import_nothing_from_the_tests():
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import bench\n"
        "names = [m.name for m in pkgutil.walk_packages(bench.__path__, 'bench.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'tests')\n"
        "print(json.dumps({'modules': names, 'tests': bad}))\n"
    )
    report = run_isolated(script, dict(os.environ))
    assert "bench.engine" in report["modules"]
    assert report["tests"] == []


def test_the_torch_free_model_families_are_the_ones_the_runner_fuses():
    from engine import families, runner

    assert runner.LLAMA_LIKE == families.LLAMA_LIKE  # until engine/runner.py imports it from engine.families

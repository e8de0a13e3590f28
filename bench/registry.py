"""`python -m bench.registry`: import time of each bundled model, and load time of a stored version
against loading the original GGUF directly (what every load would cost without the conversion on
import). Runs in a temp var/ folder (SQLite + embedded Redis), so it touches nothing of yours.

Human-readable table, then one JSON object as the last line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from statistics import median


def _setup() -> None:
    os.environ["TAUON_VAR"] = tempfile.mkdtemp(prefix="tauon-bench-registry-")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _timed_loads(load, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = load()
        times.append(time.perf_counter() - started)
        del model
    return median(times)


def main() -> None:
    quick = "--quick" in sys.argv
    _setup()
    from transformers import AutoModelForCausalLM

    from console.registry.bundled import BUNDLED, register
    from workers.tasks import run_job

    imports: dict[str, float] = {}
    versions = {}
    for bundled in BUNDLED:
        started = time.perf_counter()
        version, _ = register(bundled, enqueue=False)
        run_job.apply(args=[version.import_job_id])
        imports[bundled.name] = time.perf_counter() - started
        version.refresh_from_db()
        assert version.status == "ready", version.status_reason
        versions[bundled.name] = version

    smol = versions["smollm2-135m-instruct"]
    gguf = next(b for b in BUNDLED if b.name == "smollm2-135m-instruct").path()
    repeats = 1 if quick else 3
    stored_s = _timed_loads(lambda: AutoModelForCausalLM.from_pretrained(smol.path), repeats)
    direct_s = _timed_loads(lambda: AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name), 1)

    rows = [
        ("import smollm2-135m-instruct (GGUF → safetensors, hash, inspect)", f"{imports['smollm2-135m-instruct']:.1f} s"),
        ("import all-minilm-l6-v2 (copy, hash, inspect)", f"{imports['all-minilm-l6-v2']:.1f} s"),
        ("load stored SmolLM2 version (safetensors, file in the page cache), median", f"{stored_s:.2f} s"),
        ("baseline: load the GGUF directly (dequantize + tokenizer conversion), every load", f"{direct_s:.1f} s"),
        ("what converting once on import saves per load (no load-time cache of any kind)", f"{direct_s / stored_s:.0f}×"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>8}")
    print(json.dumps({
        "import_smollm2_s": round(imports["smollm2-135m-instruct"], 2),
        "import_minilm_s": round(imports["all-minilm-l6-v2"], 2),
        "load_stored_s": round(stored_s, 3),
        "load_gguf_direct_s": round(direct_s, 2),
        "load_speedup": round(direct_s / stored_s, 1),
        "parameter_count": smol.parameter_count,
        "stored_bytes": smol.total_size,
    }))


if __name__ == "__main__":
    main()

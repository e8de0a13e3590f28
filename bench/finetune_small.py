"""A small dataset and the fine-tuning defaults: the bundled all-MiniLM-L6-v2 trained into a sentiment
classifier on the first 37 rows of bench/data/sentiment.jsonl (a seeded 10 % held out, as the console's
default eval_fraction), once with 4 epochs as asked (a handful of optimizer steps) and once with the console's
default when no epochs are given (epochs chosen so the run makes at least 100 steps), each against the
majority-class baseline the job page shows. `python -m bench.finetune_small`; the last line is JSON."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.finetune import DATA, MINILM, SEED
from engine.finetune import FinetuneConfig, finetune, majority_baseline, split

ROWS = 37


def _console_default_min_steps() -> int:
    """The console's default (console.registry.finetuning needs Django's apps loaded to import)."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    from console.registry.finetuning import DEFAULT_MIN_STEPS

    return DEFAULT_MIN_STEPS


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:ROWS]
    train, held = split(rows, 0.1, SEED)
    baseline = majority_baseline(train, held) or {"accuracy": 0.0, "label": "-"}
    common = {"task": "text-classification", "method": "full", "learning_rate": 1e-4, "seed": SEED, "eval_fraction": 0.1}
    runs = {"epochs_4": FinetuneConfig(**common, epochs=4),
            "default_min_steps": FinetuneConfig(**common, min_steps=_console_default_min_steps())}
    figures: dict[str, float | str] = {"rows": len(rows), "train_rows": len(train), "heldout_rows": len(held),
                                       "baseline_accuracy": baseline["accuracy"], "baseline_label": baseline["label"]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in runs.items():
            start = time.perf_counter()
            result = finetune(MINILM, Path(tmp) / name, rows, config)
            figures[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
            figures[f"{name}_steps"] = result.steps
            figures[f"{name}_accuracy"] = result.eval_accuracy or 0.0
            figures[f"{name}_eval_loss"] = round(result.eval_loss or 0.0, 4)
    print(f"all-MiniLM-L6-v2 sentiment, {len(train)} train / {len(held)} held-out rows "
          f"(baseline: always '{baseline['label']}')")
    print(f"{'run':<20}{'steps':>7}{'accuracy':>10}{'vs baseline':>13}{'eval loss':>11}{'seconds':>9}")
    for name in runs:
        accuracy = float(figures[f"{name}_accuracy"])
        print(f"{name:<20}{figures[f'{name}_steps']:>7}{accuracy:>10.3f}{accuracy - baseline['accuracy']:>+13.3f}"
              f"{figures[f'{name}_eval_loss']:>11.4f}{figures[f'{name}_seconds']:>9.1f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

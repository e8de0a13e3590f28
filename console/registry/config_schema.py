"""The schema of a version's free-form `config`: sampling defaults, quantization, batching limits.

`sampling` has the name and the field names a deployment's config uses (`max_tokens`, `temperature`, …):
a new deployment starts from its version's `sampling`. The old name `generation` is refused with a message
saying so.

Unknown top-level keys are refused so typos surface at once; each section is optional."""

from __future__ import annotations

from typing import Any

import jsonschema
from django.core.exceptions import ValidationError

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sampling": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 131072},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "top_k": {"type": "integer", "minimum": 0},
                "repetition_penalty": {"type": "number", "exclusiveMinimum": 0},
                "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "stop": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
                "seed": {"type": "integer"},
            },
        },
        "quantization": {
            "type": "object",
            "additionalProperties": False,
            "required": ["method"],
            "properties": {
                "method": {"enum": ["none", "int8", "w8a8", "int4", "fp16", "bf16"]},
                "recipe": {"type": "object"},
            },
        },
        "batching": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_num_seqs": {"type": "integer", "minimum": 1, "maximum": 4096},
                "max_batch_tokens": {"type": "integer", "minimum": 1},
                "kv_cache_bytes": {"type": "integer", "minimum": 0},
                "max_queue": {"type": "integer", "minimum": 0},
            },
        },
        "compression": {  # written by a `compress` job: how this version was made from its parent
            "type": "object",
            "required": ["method"],
            "properties": {
                "method": {"type": "string"},
                "recipe": {"type": "object"},
                "parent": {"type": "integer"},
                "sparsity": {"type": "number", "minimum": 0, "maximum": 1},
                "layer_sparsity": {"type": "object", "additionalProperties": {"type": "number"}},
                "calibration_dataset": {"type": "string"},
                "calibration_dataset_version": {"type": "integer", "minimum": 1},
            },
        },
        "dtype": {"enum": ["auto", "float32", "float16", "bfloat16"]},
        "max_context": {"type": "integer", "minimum": 1},
        "labels": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "string", "maxLength": 5000},
    },
}

_validator = jsonschema.Draft202012Validator(CONFIG_SCHEMA)


def _openapi(schema: Any) -> Any:
    """CONFIG_SCHEMA in OpenAPI 3.0's dialect (no $schema; a numeric exclusiveMinimum is a boolean flag there)."""
    if isinstance(schema, list):
        return [_openapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _openapi(value) for key, value in schema.items() if key != "$schema"}
    if isinstance(schema.get("exclusiveMinimum"), int | float) and not isinstance(schema["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    return out


OPENAPI_CONFIG_SCHEMA = _openapi(CONFIG_SCHEMA)


def validate_config(config: Any) -> None:
    """Raise ValidationError({"config": "<path>: <problem>"}) for the first problem found."""
    if isinstance(config, dict) and "generation" in config:
        raise ValidationError({"config": "config generation: the sampling defaults are called 'sampling' (as in a "
                                         "deployment's config), with 'max_tokens' for 'max_new_tokens'."})
    errors = sorted(_validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ValidationError({"config": f"config {where}: {err.message}"})

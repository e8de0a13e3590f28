"""Small display filters for the console pages."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def params(count: int | None) -> str:
    """135_000_000 → '135M'; None (or anything but a number) → '—'."""
    if not isinstance(count, int | float) or isinstance(count, bool):
        return "—"
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= limit:
            value = count / limit
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(count)


@register.filter
def percent(fraction: float | None) -> int:
    return round((fraction or 0) * 100)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)

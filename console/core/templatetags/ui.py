"""`{{ value|when }}`: a time as a <time> element in UTC that app.js rewrites into the reader's own zone
(the browser's), naming the zone either way."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.filter
def when(value: datetime | None, fmt: str = "Y-m-d H:i") -> str:
    if not value:
        return "—"
    from django.utils.dateformat import format as date_format

    utc = value.astimezone(UTC) if timezone.is_aware(value) else value
    return format_html('<time datetime="{}">{} UTC</time>', utc.isoformat(), date_format(utc, fmt))


@register.filter
def status_word(code: str) -> str:
    """A status code (pending, ready, …) as the word the reader's language uses for it."""
    from console.core.js_strings import STATUS

    return str(STATUS.get(str(code), code))


@register.simple_tag
def js_strings() -> str:
    """The scripts' strings in the active language, as <script id="tauon-i18n" type="application/json">."""
    from django.utils.html import json_script

    from console.core.js_strings import catalog

    return json_script(catalog(), "tauon-i18n")

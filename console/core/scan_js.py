"""The t("…") literals of the console's scripts (console/static/console/*.js), in order of first use."""

from __future__ import annotations

import json
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"
MODULE = Path(__file__).resolve().parent / "js_strings.py"
CALL = re.compile(r'\bt\(("(?:[^"\\]|\\.)*")')


def script_strings() -> list[str]:
    seen: dict[str, None] = {}
    for path in sorted(STATIC.glob("*.js")):
        for literal in CALL.findall(path.read_text()):
            seen.setdefault(json.loads(literal), None)
    return list(seen)


def regenerate(path: Path = MODULE) -> None:
    """Rewrite js_strings.SCRIPT_STRINGS from the scripts (run after adding a t("…") to a script)."""
    text = path.read_text()
    head, rest = text.split("    # BEGIN generated\n")
    _, tail = rest.split("    # END generated\n")
    body = "".join(f"    _({json.dumps(s, ensure_ascii=False)}),\n" for s in script_strings())
    path.write_text(head + "    # BEGIN generated\n" + body + "    # END generated\n" + tail)


if __name__ == "__main__":
    regenerate()

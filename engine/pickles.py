"""Find pickles by their content, without unpickling anything.

A pickle can run arbitrary code when loaded, whatever its file is called, so every file of an
upload is checked: protocol 2–5 streams start with PROTO (0x80); protocol 0 and 1 streams have no
header, so the first bytes are disassembled with `pickletools` (which parses opcodes and simulates
the stack and memo, never calling anything); a zip container (torch's checkpoints, .npz) may hold
pickles; an .npy array of dtype object is a pickle after its header."""

from __future__ import annotations

import ast
import io
import pickletools
from pathlib import Path

SNIFF_BYTES = 1024 * 1024  # a megabyte of well-formed pickle opcodes is no accident
TRUNCATED = ("exhausted before seeing STOP", "remain", "not enough data", "no newline found")
NPY_MAGIC = b"\x93NUMPY"


class _Discard(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def is_pickle_stream(head: bytes, complete: bool) -> bool:
    """True when `head` (the first bytes of a file; `complete` when it is the whole file) is a pickle."""
    try:
        pickletools.dis(head, out=_Discard())
    except ValueError as exc:  # not opcodes, or not a consistent stream (stack, memo, marks), or cut short
        return not complete and any(part in str(exc) for part in TRUNCATED)
    except Exception:  # noqa: BLE001 - any other parse failure: not a pickle
        return False
    return True


def npy_holds_objects(head: bytes) -> bool:
    """True for an .npy array whose dtype holds Python objects (numpy stores them pickled)."""
    if not head.startswith(NPY_MAGIC) or len(head) < 10:
        return False
    major = head[6]
    if major == 1:
        length, start = int.from_bytes(head[8:10], "little"), 10
    else:
        length, start = int.from_bytes(head[8:12], "little"), 12
    try:
        header = ast.literal_eval(head[start:start + length].decode("latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return True  # an .npy whose header we cannot read is not worth the risk
    return "O" in repr(descr)


def kind_of(path: Path) -> str | None:
    """'pickle', 'npy-object' or 'zip' when the file is or may hold a pickle, else None."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES + 1)
    complete = len(head) <= SNIFF_BYTES
    head = head[:SNIFF_BYTES]
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "npy-object" if npy_holds_objects(head) else None
    if is_pickle_stream(head, complete):
        return "pickle"
    return None

"""Safe extraction of uploaded .zip and .tar.gz archives.

Every member is checked before a byte of it is written: no absolute paths, no `..`, no links,
no device or fifo entries, no duplicates; the entry count, the total uncompressed size and the
compression ratio are capped; and the bytes actually written are counted, so a header that lies
about a size cannot get past the caps. Files are written by us (never `extractall`), under
names built from checked path parts, with default permissions."""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings

SUFFIXES = {".zip": "zip", ".tar.gz": "tar", ".tgz": "tar"}
RATIO_FLOOR = 1024 * 1024  # below this many uncompressed bytes any ratio is harmless
CHUNK = 1024 * 1024
SKIPPED_PREFIXES = ("__MACOSX/",)  # metadata macOS's archiver adds
SKIPPED_NAMES = (".DS_Store",)


class ArchiveRefused(Exception):
    def __init__(self, message: str, code: str = "invalid_archive"):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True, slots=True)
class Limits:
    max_entries: int
    max_bytes: int
    max_ratio: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.TAUON_MAX_ARCHIVE_ENTRIES, settings.TAUON_MAX_EXTRACTED_BYTES,
                   settings.TAUON_MAX_COMPRESSION_RATIO)

    def check_count(self, count: int) -> None:
        if count > self.max_entries:
            raise ArchiveRefused(f"The archive has more than {self.max_entries} entries (the limit, "
                                 f"TAUON_MAX_ARCHIVE_ENTRIES). Archive only the model folder.", code="archive_too_many_entries")

    def check_total(self, total: int, archive_size: int) -> None:
        if total > self.max_bytes:
            raise ArchiveRefused(f"The archive expands to more than {self.max_bytes} bytes (the limit, "
                                 f"TAUON_MAX_EXTRACTED_BYTES). Upload a smaller model or ask an admin to raise "
                                 f"the limit.", code="archive_too_large")
        if total > RATIO_FLOOR and total > self.max_ratio * max(archive_size, 1):
            raise ArchiveRefused(f"The archive expands more than {self.max_ratio} times its size (the limit, "
                                 f"TAUON_MAX_COMPRESSION_RATIO); it looks like a decompression bomb. Model weights "
                                 f"do not compress that well: check the archive's contents.", code="archive_ratio")


MAX_DEPTH = 32  # folders in one entry's path
MAX_NAME_BYTES = 255  # one path component, as ext4 and most file systems allow


def kind_of(filename: str) -> str | None:
    """'zip' or 'tar' by the file's suffix, else None."""
    lower = filename.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if lower.endswith(suffix)), None)


def member_path(name: str) -> PurePosixPath | None:
    """The checked relative path of an archive member; None for the archive's own root entry."""
    if "\x00" in name:
        raise ArchiveRefused(f"Archive entry {name!r} has a NUL byte in its name.", code="unsafe_path")
    if "\\" in name:
        raise ArchiveRefused(f"Archive entry '{name}' uses backslashes; re-create the archive with '/' separators "
                             f"(e.g. with `zip -r` or `tar czf`).", code="unsafe_path")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveRefused(f"Archive entry '{name}' has an absolute path; archive the model folder with paths "
                             f"relative to it.", code="unsafe_path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"Archive entry '{name}' contains '..' and would be written outside the model folder "
                             f"(zip-slip); it was refused.", code="unsafe_path")
    if len(parts) - 1 > MAX_DEPTH:
        raise ArchiveRefused(f"Archive entry '{name[:200]}…' is {len(parts) - 1} folders deep; a model folder nests at "
                             f"most {MAX_DEPTH}.", code="unsafe_path")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES), None)
    if long is not None:
        raise ArchiveRefused(f"Archive entry '{name[:200]}…' has a name over {MAX_NAME_BYTES} bytes, longer than "
                             f"file systems allow; shorten it.", code="unsafe_path")
    return PurePosixPath(*parts) if parts else None


def _skipped(rel: PurePosixPath) -> bool:
    text = rel.as_posix() + "/"
    return text.startswith(SKIPPED_PREFIXES) or rel.name in SKIPPED_NAMES


def _copy(src: BinaryIO, target: Path, declared: int, written_before: int, limits: Limits, archive_size: int) -> int:
    """Stream one member to `target`; refuse as soon as it exceeds its declared size or the caps."""
    written = 0
    try:
        out = target.open("xb")
    except FileExistsError:
        raise
    except OSError as exc:
        raise ArchiveRefused(f"Archive entry '{target.name[:200]}' cannot be written: {exc.strerror}.",
                             code="unsafe_path") from exc
    with out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > declared:
                raise ArchiveRefused(f"Archive entry '{target.name}' holds more data than its header says; the "
                                     f"archive is corrupt or malicious.", code="archive_corrupt")
            limits.check_total(written_before + written, archive_size)
            out.write(chunk)
    return written


class _Extractor:
    def __init__(self, dest: Path, limits: Limits, archive_size: int):
        self.dest, self.limits, self.archive_size = dest.resolve(), limits, archive_size
        self.seen: set[PurePosixPath] = set()
        self.written = 0

    def target(self, name: str, *, is_dir: bool) -> Path | None:
        """Where the entry `name` goes, or None for a folder or an entry we skip (checked, not written)."""
        rel = member_path(name)
        if rel is None:
            return None
        if rel in self.seen:
            raise ArchiveRefused(f"Archive entry '{rel}' appears twice.", code="unsafe_path")
        self.seen.add(rel)
        if _skipped(rel):
            return None
        path = self.dest.joinpath(*rel.parts)
        try:
            (path if is_dir else path.parent).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveRefused(f"Archive entry '{rel}' cannot be placed: {exc.strerror}.", code="unsafe_path") from exc
        if not path.resolve().is_relative_to(self.dest):  # belt and braces: the checks above already ensure it
            raise ArchiveRefused(f"Archive entry '{rel}' resolves outside the model folder.", code="unsafe_path")
        return None if is_dir else path

    def write(self, src: BinaryIO, target: Path, declared: int) -> None:
        try:
            self.written += _copy(src, target, declared, self.written, self.limits, self.archive_size)
        except FileExistsError as exc:
            raise ArchiveRefused(f"Archive entry '{target.name}' collides with another entry.", code="unsafe_path") from exc


def extract_zip(fileobj: BinaryIO, size: int, dest: Path, limits: Limits) -> None:
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRefused(f"The file is not a valid zip archive ({exc}).", code="invalid_archive") from exc
    with zf:
        infos = zf.infolist()
        limits.check_count(len(infos))
        limits.check_total(sum(i.file_size for i in infos), size)
        for info in infos:  # check every header before writing anything
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveRefused(f"Archive entry '{info.filename}' is a symbolic link; links are refused. "
                                     f"Archive the real files instead.", code="link_refused")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ArchiveRefused(f"Archive entry '{info.filename}' is a device, fifo or socket; only files and "
                                     f"folders are accepted.", code="special_file_refused")
            if info.flag_bits & 0x1:
                raise ArchiveRefused(f"Archive entry '{info.filename}' is encrypted; upload an unencrypted archive.",
                                     code="invalid_archive")
            if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise ArchiveRefused(f"Archive entry '{info.filename}' expands more than {limits.max_ratio} times (the "
                                     f"limit, TAUON_MAX_COMPRESSION_RATIO); it looks like a decompression bomb.",
                                     code="archive_ratio")
            member_path(info.filename)
        ex = _Extractor(dest, limits, size)
        for info in infos:
            target = ex.target(info.filename, is_dir=info.is_dir())
            if target is None:
                continue
            try:
                with zf.open(info) as src:
                    ex.write(src, target, info.file_size)
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
                raise ArchiveRefused(f"Archive entry '{info.filename}' cannot be read ({exc}); the archive is "
                                     f"corrupt or uses an unsupported compression.", code="archive_corrupt") from exc


def extract_tar(fileobj: BinaryIO, size: int, dest: Path, limits: Limits) -> None:
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveRefused(f"The file is not a valid .tar.gz archive ({exc}).", code="invalid_archive") from exc
    ex = _Extractor(dest, limits, size)
    declared, count = 0, 0
    try:
        with tf:
            for member in tf:  # headers are read lazily: each is checked before its data is written
                count += 1
                limits.check_count(count)
                if member.issym() or member.islnk():
                    raise ArchiveRefused(f"Archive entry '{member.name}' is a link (to '{member.linkname}'); links "
                                         f"are refused. Archive the real files instead.", code="link_refused")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveRefused(f"Archive entry '{member.name}' is a device, fifo or other special entry; "
                                         f"only files and folders are accepted.", code="special_file_refused")
                declared += member.size
                limits.check_total(declared, size)
                target = ex.target(member.name, is_dir=member.isdir())
                if target is None:
                    continue
                src = tf.extractfile(member)
                assert src is not None  # a regular file always has data
                with src:
                    ex.write(src, target, member.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveRefused(f"The archive cannot be read ({exc}); it is corrupt or truncated.",
                             code="archive_corrupt") from exc


def extract(fileobj: BinaryIO, size: int, kind: str, dest: Path, limits: Limits | None = None) -> Path:
    """Extract into the empty folder `dest`; return the model folder inside it (dest itself, or the
    single top folder the archive wraps the files in)."""
    limits = limits or Limits.from_settings()
    fileobj.seek(0)
    (extract_zip if kind == "zip" else extract_tar)(fileobj, size, dest, limits)
    entries = list(dest.iterdir())
    if not (dest / "config.json").exists() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest

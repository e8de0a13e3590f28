"""Safe archive extraction: every kind of hostile member is refused before it is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from console.registry.archives import ArchiveRefused, Limits, extract, kind_of, member_path

LIMITS = Limits(max_entries=100, max_bytes=50 * 1024 * 1024, max_ratio=200)


def zip_bytes(members: dict[str, bytes], *, modes: dict[str, int] | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    buf.seek(0)
    return buf


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def run(buf: io.BytesIO, kind: str, dest: Path, limits: Limits = LIMITS) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return extract(buf, len(buf.getvalue()), kind, dest, limits)


def refused(buf: io.BytesIO, kind: str, tmp_path: Path, limits: Limits = LIMITS) -> ArchiveRefused:
    with pytest.raises(ArchiveRefused) as info:
        run(buf, kind, tmp_path / "out", limits)
    return info.value


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_it_knows_archive_kinds_by_suffix():
    assert kind_of("m.zip") == "zip" and kind_of("M.TAR.GZ") == "tar" and kind_of("m.tgz") == "tar"
    assert kind_of("m.tar") is None and kind_of("m.gguf") is None


def test_it_extracts_a_zip_and_returns_the_single_top_folder(tmp_path):
    buf = zip_bytes({"my-model/config.json": b"{}", "my-model/sub/a.txt": b"hello"})
    root = run(buf, "zip", tmp_path / "out")
    assert root == tmp_path / "out" / "my-model"
    assert (root / "sub" / "a.txt").read_bytes() == b"hello"


def test_it_extracts_a_flat_tar_gz_into_the_folder_itself(tmp_path):
    root = run(tar_bytes([("config.json", b"{}"), ("./tokenizer.json", b"[]")]), "tar", tmp_path / "out")
    assert root == tmp_path / "out"
    assert everything_under(root) == ["config.json", "tokenizer.json"]


def test_it_skips_macos_metadata(tmp_path):
    root = run(zip_bytes({"config.json": b"{}", "__MACOSX/._config.json": b"x", ".DS_Store": b"x"}), "zip", tmp_path / "out")
    assert everything_under(root) == ["config.json"]


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "a/b/../../../evil.txt"])
def test_it_refuses_a_zip_slip_member_and_writes_nothing(tmp_path, name):
    exc = refused(zip_bytes({"config.json": b"{}", name: b"pwned"}), "zip", tmp_path)
    assert exc.code == "unsafe_path" and "'..'" in exc.message
    assert not (tmp_path / "evil.txt").exists()
    assert everything_under(tmp_path / "out") == []


def test_it_refuses_a_zip_slip_member_in_a_tar(tmp_path):
    exc = refused(tar_bytes([("../evil.txt", b"pwned")]), "tar", tmp_path)
    assert exc.code == "unsafe_path"
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["/etc/evil.txt", "C:/evil.txt", "c:evil.txt"])
def test_it_refuses_absolute_member_paths(tmp_path, name):
    assert refused(zip_bytes({name: b"x"}), "zip", tmp_path).code == "unsafe_path"
    assert refused(tar_bytes([(name, b"x")]), "tar", tmp_path / "t").code == "unsafe_path"


def test_it_refuses_backslashes_in_names(tmp_path):
    assert "backslash" in refused(zip_bytes({"..\\evil.txt": b"x"}), "zip", tmp_path).message
    assert "backslash" in refused(tar_bytes([("a\\b.txt", b"x")]), "tar", tmp_path / "t").message


def test_it_refuses_a_symlink_in_a_zip(tmp_path):
    buf = zip_bytes({"config.json": b"{}", "model.safetensors": b"/etc/passwd"},
                    modes={"model.safetensors": stat.S_IFLNK | 0o777})
    exc = refused(buf, "zip", tmp_path)
    assert exc.code == "link_refused" and "symbolic link" in exc.message
    assert everything_under(tmp_path / "out") == []


@pytest.mark.parametrize("link_type", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_it_refuses_symlinks_and_hardlinks_in_a_tar(tmp_path, link_type):
    link = tarfile.TarInfo("model.safetensors")
    link.type, link.linkname = link_type, "/etc/passwd"
    exc = refused(tar_bytes([("config.json", b"{}"), link]), "tar", tmp_path)
    assert exc.code == "link_refused" and "/etc/passwd" in exc.message


@pytest.mark.parametrize("entry_type", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_it_refuses_device_and_fifo_entries_in_a_tar(tmp_path, entry_type):
    dev = tarfile.TarInfo("dev")
    dev.type = entry_type
    assert refused(tar_bytes([dev]), "tar", tmp_path).code == "special_file_refused"


def test_it_refuses_a_fifo_entry_in_a_zip(tmp_path):
    buf = zip_bytes({"fifo": b""}, modes={"fifo": stat.S_IFIFO | 0o644})
    assert refused(buf, "zip", tmp_path).code == "special_file_refused"


def test_it_refuses_too_many_entries(tmp_path):
    few = Limits(max_entries=5, max_bytes=LIMITS.max_bytes, max_ratio=200)
    members = {f"f{i}.txt": b"x" for i in range(6)}
    exc = refused(zip_bytes(members), "zip", tmp_path, few)
    assert exc.code == "archive_too_many_entries" and "TAUON_MAX_ARCHIVE_ENTRIES" in exc.message
    exc = refused(tar_bytes(list(members.items())), "tar", tmp_path / "t", few)
    assert exc.code == "archive_too_many_entries"


def test_it_refuses_an_archive_that_expands_past_the_size_cap(tmp_path):
    small = Limits(max_entries=100, max_bytes=10_000, max_ratio=200)
    data = bytes(range(256)) * 50  # 12,800 bytes that barely compress
    exc = refused(zip_bytes({"a.bin.txt": data}), "zip", tmp_path, small)
    assert exc.code == "archive_too_large" and "TAUON_MAX_EXTRACTED_BYTES" in exc.message
    assert refused(tar_bytes([("a.txt", data)]), "tar", tmp_path / "t", small).code == "archive_too_large"


def test_it_refuses_a_zip_bomb_by_its_compression_ratio(tmp_path):
    bomb = zip_bytes({"config.json": b"{}", "zeros.safetensors": bytes(20 * 1024 * 1024)})
    assert len(bomb.getvalue()) < 100_000  # 20 MiB of zeros deflate to ~20 KB
    exc = refused(bomb, "zip", tmp_path)
    assert exc.code == "archive_ratio" and "decompression bomb" in exc.message
    assert everything_under(tmp_path / "out") == []


def test_it_refuses_a_tar_gz_bomb_before_writing_it(tmp_path):
    exc = refused(tar_bytes([("zeros.safetensors", bytes(20 * 1024 * 1024))]), "tar", tmp_path)
    assert exc.code == "archive_ratio"
    assert everything_under(tmp_path / "out") == []


def test_it_refuses_duplicate_entries(tmp_path):
    exc = refused(tar_bytes([("config.json", b"{}"), ("./config.json", b"{\"x\": 1}")]), "tar", tmp_path)
    assert "twice" in exc.message


def test_it_refuses_files_that_are_not_archives(tmp_path):
    assert refused(io.BytesIO(b"not a zip at all"), "zip", tmp_path).code == "invalid_archive"
    assert refused(io.BytesIO(b"not a tar at all" * 100), "tar", tmp_path / "t").code == "invalid_archive"


def test_it_refuses_a_truncated_tar_gz(tmp_path):
    whole = tar_bytes([("config.json", b"{}"), ("weights.txt", bytes(range(256)) * 4000)]).getvalue()
    exc = refused(io.BytesIO(whole[: len(whole) // 2]), "tar", tmp_path)
    assert exc.code in {"archive_corrupt", "invalid_archive"}


def test_member_paths_are_normalised():
    assert str(member_path("./a//b/./c.json")) == "a/b/c.json"
    assert member_path("./") is None

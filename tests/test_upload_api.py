"""Adding versions through POST /api/models/{name}/versions/: every bad input from issue 2 answers
4xx with a useful message and leaves nothing behind; good uploads go importing → ready through a
real worker; and the size limit holds under uvicorn, with memory flat for a large upload."""

from __future__ import annotations

import http.client
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from console.registry.models import Alias, AliasEvent, Model, ModelVersion
from tests.conftest import ROOT, _database_url, wait_for
from tests.ggufactory import tiny_llama_gguf
from tests.modelfactory import targz_dir, zip_dir
from tests.test_archives import tar_bytes, zip_bytes

pytestmark = pytest.mark.django_db

VERSIONS = "/api/models/tiny-llm/versions/"


# --- fixtures and helpers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_files(llama_dir) -> dict[str, bytes]:
    return {p.relative_to(llama_dir).as_posix(): p.read_bytes() for p in sorted(llama_dir.rglob("*")) if p.is_file()}


def storage_snapshot() -> set[str]:
    root = Path(settings.TAUON_STORAGE)
    return {f"{sub}/{p.name}" for sub in ("models", "tmp") if (root / sub).exists() for p in (root / sub).iterdir()}


def post_file(client, name: str, content: bytes, **fields):  # type: ignore[no-untyped-def]
    return client.post(VERSIONS, {"file": SimpleUploadedFile(name, content), **fields}, format="multipart")


def assert_refused(response, status: int, code: str, says: str, before: set[str], field: str | None = "file") -> None:  # type: ignore[no-untyped-def]
    body = response.json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code and body["error"]["field"] == field, body
    assert says.lower() in body["error"]["message"].lower(), body
    assert not ModelVersion.objects.exists()
    assert storage_snapshot() == before


def with_member(files: dict[str, bytes], name: str, data: bytes) -> dict[str, bytes]:
    return {**files, name: data}


# --- bad archives ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("member", "says"), [
    ("../evil.txt", "zip-slip"),
    ("tiny/../../evil.txt", "'..'"),
    ("/etc/evil.txt", "absolute path"),
])
def test_an_archive_member_escaping_the_folder_is_refused(maintainer_api, llm, llama_files, member, says):
    before = storage_snapshot()
    archive = zip_bytes(with_member(llama_files, member, b"pwned")).getvalue()
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "unsafe_path", says, before)
    archive = tar_bytes([*llama_files.items(), (member, b"pwned")]).getvalue()
    assert_refused(post_file(maintainer_api, "m.tar.gz", archive), 400, "unsafe_path", says, before)
    assert not (Path(settings.TAUON_STORAGE) / "evil.txt").exists()


def test_a_symlink_member_is_refused(maintainer_api, llm, llama_files):
    before = storage_snapshot()
    archive = zip_bytes(with_member(llama_files, "model.safetensors", b"/etc/passwd"),
                        modes={"model.safetensors": stat.S_IFLNK | 0o777}).getvalue()
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "link_refused", "symbolic link", before)
    import tarfile

    link = tarfile.TarInfo("weights.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = tar_bytes([*llama_files.items(), link]).getvalue()
    assert_refused(post_file(maintainer_api, "m.tgz", archive), 400, "link_refused", "links are refused", before)


def test_a_zip_bomb_with_too_many_entries_is_refused(maintainer_api, llm, llama_files, settings):
    settings.TAUON_MAX_ARCHIVE_ENTRIES = 20
    before = storage_snapshot()
    members = {**llama_files, **{f"junk/{i}.txt": b"x" for i in range(30)}}
    assert_refused(post_file(maintainer_api, "m.zip", zip_bytes(members).getvalue()), 400,
                   "archive_too_many_entries", "TAUON_MAX_ARCHIVE_ENTRIES", before)


def test_a_zip_bomb_over_the_total_size_is_refused(maintainer_api, llm, llama_files, settings):
    settings.TAUON_MAX_EXTRACTED_BYTES = 100_000  # the tiny model alone is ~1.3 MB
    before = storage_snapshot()
    assert_refused(post_file(maintainer_api, "m.zip", zip_bytes(llama_files).getvalue()), 400,
                   "archive_too_large", "TAUON_MAX_EXTRACTED_BYTES", before)


def test_a_zip_bomb_with_a_huge_compression_ratio_is_refused(maintainer_api, llm, llama_files):
    before = storage_snapshot()
    bomb = zip_bytes(with_member(llama_files, "padding.safetensors", bytes(300 * 1024 * 1024))).getvalue()
    assert len(bomb) < 6 * 1024 * 1024  # 300 MiB of zeros deflate to ~300 KB beside the ~4 MB model
    assert_refused(post_file(maintainer_api, "bomb.zip", bomb), 400, "archive_ratio", "decompression bomb", before)


# --- bad model contents ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_a_pickle_checkpoint_is_refused(maintainer_api, llm, llama_files, name):
    before = storage_snapshot()
    payload = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)
    assert_refused(post_file(maintainer_api, name, payload), 400, "pickle_refused", "only safetensors and GGUF", before)
    archive = zip_bytes(with_member(llama_files, name, payload)).getvalue()
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "pickle_refused", name, before)


def test_a_pickle_renamed_to_safetensors_is_refused(maintainer_api, llm, llama_files):
    before = storage_snapshot()
    archive = zip_bytes(with_member(llama_files, "model.safetensors", pickle.dumps({"w": 1}, protocol=2))).getvalue()
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "pickle_refused", "is a Python pickle", before)


def test_a_folder_without_config_json_is_refused(maintainer_api, llm, llama_files):
    before = storage_snapshot()
    files = {k: v for k, v in llama_files.items() if k != "config.json"}
    assert_refused(post_file(maintainer_api, "m.zip", zip_bytes(files).getvalue()), 400, "missing_config",
                   "no config.json", before)


def test_a_config_with_auto_map_is_refused(maintainer_api, llm, llama_files):
    import json

    config = json.loads(llama_files["config.json"])
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    files = {**llama_files, "config.json": json.dumps(config).encode(), "modeling_evil.py": b"import os\n"}
    before = storage_snapshot()
    assert_refused(post_file(maintainer_api, "m.tar.gz", tar_bytes(list(files.items())).getvalue()), 400,
                   "remote_code_refused", "trust_remote_code", before)


def test_a_truncated_safetensors_file_is_refused(maintainer_api, llm, llama_files):
    files = {**llama_files, "model.safetensors": llama_files["model.safetensors"][:-1000]}
    before = storage_snapshot()
    assert_refused(post_file(maintainer_api, "m.zip", zip_bytes(files).getvalue()), 400, "truncated_safetensors",
                   "incomplete", before)


def test_a_truncated_gguf_is_refused(maintainer_api, llm, tmp_path):
    tiny_llama_gguf(tmp_path / "t.gguf")
    before = storage_snapshot()
    assert_refused(post_file(maintainer_api, "t.gguf", (tmp_path / "t.gguf").read_bytes()[:-5000]), 400,
                   "truncated_gguf", "incomplete", before)


def test_a_file_over_the_size_limit_answers_413(maintainer_api, llm, llama_files, settings):
    settings.TAUON_MAX_UPLOAD_BYTES = 50_000
    before = storage_snapshot()
    response = post_file(maintainer_api, "m.zip", zip_bytes(llama_files).getvalue())
    assert_refused(response, 413, "upload_too_large", "TAUON_MAX_UPLOAD_BYTES", before)


def test_a_file_over_the_limit_is_stopped_while_it_streams_in(maintainer_api, llm, settings):
    settings.TAUON_MAX_UPLOAD_BYTES = 1_000_000  # the body (1.5 MB) is within the form slack: caught per chunk
    before = storage_snapshot()
    response = post_file(maintainer_api, "big.gguf", b"GGUF" + bytes(1_500_000))
    assert_refused(response, 413, "upload_too_large", "TAUON_MAX_UPLOAD_BYTES", before)


def test_an_unsupported_file_type_is_refused(maintainer_api, llm):
    before = storage_snapshot()
    assert_refused(post_file(maintainer_api, "model.onnx", b"\x08\x01"), 400, "unsupported_file_type", ".gguf", before)


def test_a_user_without_the_maintainer_role_cannot_upload(user_api, llm, llama_files):
    before = storage_snapshot()
    response = post_file(user_api, "m.zip", zip_bytes(llama_files).getvalue())
    assert response.status_code == 403
    assert not ModelVersion.objects.exists() and storage_snapshot() == before


# --- the hub --------------------------------------------------------------------------------------

def test_a_hub_id_while_offline_is_refused_at_once(maintainer_api, llm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = storage_snapshot()
    started = time.monotonic()
    response = maintainer_api.post(VERSIONS, {"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}, format="json")
    assert time.monotonic() - started < 2
    assert_refused(response, 400, "hub_unreachable", "Cannot reach the Hugging Face hub", before, field="hub_id")


def test_a_hub_id_without_network_is_refused_within_the_timeout(maintainer_api, llm, monkeypatch, settings):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings.TAUON_HUB_TIMEOUT_S = 3
    before = storage_snapshot()
    started = time.monotonic()
    response = maintainer_api.post(VERSIONS, {"hub_id": "tauon-tests/no-such-model-0000"}, format="json")
    assert time.monotonic() - started < 5
    assert response.status_code == 400 and response.json()["error"]["code"] in {"hub_unreachable", "hub_not_found"}
    assert not ModelVersion.objects.exists() and storage_snapshot() == before


def test_a_malformed_hub_id_is_refused(maintainer_api, llm):
    before = storage_snapshot()
    response = maintainer_api.post(VERSIONS, {"hub_id": "../../etc/passwd"}, format="json")
    assert_refused(response, 400, "invalid_hub_id", "owner/name", before, field="hub_id")


# --- registry conflicts ---------------------------------------------------------------------------

def test_a_duplicate_model_name_is_refused(maintainer_api):
    body = {"name": "twin", "task": "text-generation"}
    assert maintainer_api.post("/api/models/", body, format="json").status_code == 201
    response = maintainer_api.post("/api/models/", body, format="json")
    assert response.status_code in (400, 409)
    assert "already exists" in response.json()["error"]["message"]
    assert Model.objects.filter(name="twin").count() == 1


def test_an_alias_cannot_point_at_a_failed_version_or_another_models_version(maintainer_api, llm):
    other = Model.objects.create(name="other", task="text-generation")
    ModelVersion.objects.create(model=other, number=1, source="upload", storage_key="a" * 32, status="ready")
    ModelVersion.objects.create(model=other, number=2, source="upload", storage_key="b" * 32, status="ready")
    ModelVersion.objects.create(model=llm, number=1, source="upload", storage_key="c" * 32, status="failed",
                                status_reason="truncated")
    url = "/api/models/tiny-llm/aliases/production"
    failed = maintainer_api.put(url, {"version": 1}, format="json")
    assert failed.status_code == 400 and "only ready versions" in failed.json()["error"]["message"]
    foreign = maintainer_api.put(url, {"version": 2}, format="json")
    assert foreign.status_code == 404 and "has no version 2" in foreign.json()["error"]["message"]
    assert not Alias.objects.exists() and not AliasEvent.objects.exists()


# --- happy paths through a real worker ------------------------------------------------------------

def wait_until_imported(client, number: int, worker) -> dict:  # type: ignore[no-untyped-def]
    url = f"{VERSIONS}{number}/"
    body = wait_for(lambda: (b := client.get(url).json())["status"] != "importing" and b, 90, what="import end")
    assert body["status"] == "ready", body["status_reason"] + worker.log()[-3000:]
    return body


@pytest.mark.django_db(transaction=True)
def test_zip_tar_gz_and_gguf_uploads_go_from_importing_to_ready(celery_worker, maintainer_api, llm, llama_dir, tmp_path):
    import hashlib

    from transformers import AutoModelForCausalLM

    before = storage_snapshot()  # (a worker another test killed on purpose may have left its temp folder)

    uploads = [
        ("tiny.zip", zip_dir(llama_dir, tmp_path / "tiny.zip").read_bytes(), "safetensors"),
        ("tiny.tar.gz", targz_dir(llama_dir, tmp_path / "tiny.tar.gz", prefix="tiny-llama/").read_bytes(), "safetensors"),
    ]
    source = tiny_llama_gguf(tmp_path / "tiny.gguf")
    uploads.append(("tiny.gguf", (tmp_path / "tiny.gguf").read_bytes(), "gguf"))
    expected_params = sum(p.numel() for p in source.parameters())
    folder_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(llama_dir).parameters())
    for number, (name, content, fmt) in enumerate(uploads, start=1):
        response = post_file(maintainer_api, name, content, config='{"sampling": {"max_tokens": 16}}')
        assert response.status_code == 202, response.json()
        created = response.json()
        assert (created["number"], created["status"], created["format"]) == (number, "importing", fmt)
        body = wait_until_imported(maintainer_api, number, celery_worker)
        version = ModelVersion.objects.get(model=llm, number=number)
        for entry in body["files"]:
            assert entry["sha256"] == hashlib.sha256((version.path / entry["path"]).read_bytes()).hexdigest()
        assert body["architecture"] == "LlamaForCausalLM" and body["has_tokenizer"] and body["chat_template"]
        assert body["dtype"] == "float32" and body["total_size"] == sum(f["size"] for f in body["files"])
        assert body["config"] == {"sampling": {"max_tokens": 16}} and body["source_ref"] == name
        if fmt == "gguf":
            assert body["parameter_count"] == expected_params
            assert {"source.gguf", "model.safetensors", "config.json"} <= {f["path"] for f in body["files"]}
        else:
            assert body["parameter_count"] == folder_params
    assert not any(p.startswith("tmp/") for p in storage_snapshot() - before)


@pytest.mark.django_db(transaction=True)
def test_a_gguf_that_transformers_cannot_convert_ends_failed_with_the_reason(celery_worker, maintainer_api, llm, tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "no-such-arch")
    writer.add_tensor("w", __import__("numpy").zeros((4, 4), dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    response = post_file(maintainer_api, "odd.gguf", (tmp_path / "odd.gguf").read_bytes())
    assert response.status_code == 202
    url = f"{VERSIONS}{response.json()['number']}/"
    body = wait_for(lambda: (b := maintainer_api.get(url).json())["status"] != "importing" and b, 90, what="import end")
    assert body["status"] == "failed" and "no-such-arch" in body["status_reason"], body
    assert not ModelVersion.objects.get(model=llm).path.exists()


# --- under uvicorn: the ASGI size guard and a large streamed upload --------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`uvicorn console.asgi:application` on the test database and storage, with its own upload limit."""

    def __init__(self, limit: int):
        self.port = free_port()
        env = dict(os.environ, DATABASE_URL=_database_url(), REDIS_URL=settings.REDIS_URL,
                   TAUON_STORAGE=str(settings.TAUON_STORAGE), TAUON_MAX_UPLOAD_BYTES=str(limit),
                   DJANGO_SETTINGS_MODULE="console.settings", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--log-level", "warning"], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.ready, 60, what="uvicorn")

    def ready(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def peak_rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=20)


@pytest.fixture
def server_factory() -> Iterator:
    servers: list[Server] = []

    def start(limit: int) -> Server:
        servers.append(Server(limit))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def api_key(user) -> str:  # type: ignore[no-untyped-def]
    from console.accounts.models import ApiKey

    return ApiKey.issue(user, name="upload-test")[1]


def multipart_parts(filename: str, size: int, head: bytes) -> tuple[bytes, bytes, int]:
    boundary = "tauon-test-boundary"
    before = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
              f"Content-Type: application/octet-stream\r\n\r\n").encode() + head
    after = f"\r\n--{boundary}--\r\n".encode()
    return before, after, len(before) + (size - len(head)) + len(after)


def stream_upload(server: Server, key: str, filename: str, size: int, head: bytes, *, declare_length: bool = True):  # type: ignore[no-untyped-def]
    before, after, total = multipart_parts(filename, size, head)
    chunk = bytes(1024 * 1024)

    def body() -> Iterator[bytes]:
        yield before
        left = size - len(head)
        while left > 0:
            yield chunk[: min(left, len(chunk))]
            left -= len(chunk)
        yield after

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=tauon-test-boundary"}
    if declare_length:
        headers["Content-Length"] = str(total)
    try:
        conn.request("POST", VERSIONS, body=body(), headers=headers, encode_chunked=not declare_length)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before reading everything: read that answer
    response = conn.getresponse()
    return response.status, response.read()


@pytest.mark.django_db(transaction=True)
def test_under_uvicorn_an_oversize_upload_is_refused_before_its_body_is_read(server_factory, bob, llm):
    import json

    server = server_factory(limit=1024 * 1024)
    key, before = api_key(bob), storage_snapshot()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", VERSIONS)
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(5 * 1024**3))  # announces 5 GB, sends 1 KB
    conn.endheaders()
    conn.send(b"x" * 1024)
    started = time.monotonic()
    response = conn.getresponse()
    assert response.status == 413 and time.monotonic() - started < 5
    error = json.loads(response.read())["error"]
    assert error["code"] == "upload_too_large" and "TAUON_MAX_UPLOAD_BYTES" in error["message"]

    status, body = stream_upload(server, key, "big.gguf", 4 * 1024 * 1024, b"GGUF", declare_length=False)
    assert status == 413 and b"upload_too_large" in body  # chunked, no length: cut off at the limit
    assert not ModelVersion.objects.exists() and storage_snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_under_uvicorn_a_200_mb_upload_streams_to_disk_with_flat_memory(server_factory, bob, llm):
    server = server_factory(limit=1024**3)
    key, before = api_key(bob), storage_snapshot()
    bad_version = b"GGUF" + (99).to_bytes(4, "little")  # read to the end, stored, then refused as GGUF v99
    status, body = stream_upload(server, key, "warmup.gguf", 1024 * 1024, bad_version)
    assert status == 400, body
    baseline = server.peak_rss_kb()
    started = time.monotonic()
    status, body = stream_upload(server, key, "big.gguf", 200 * 1024 * 1024, bad_version)
    seconds = time.monotonic() - started
    assert status == 400 and b"version 99" in body, body
    growth_mb = (server.peak_rss_kb() - baseline) / 1024
    print(f"200 MB upload: {seconds:.1f}s, server peak RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 40
    assert not ModelVersion.objects.exists() and storage_snapshot() == before

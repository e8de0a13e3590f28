"""Import refuses what can never serve safely (issue 15): remote code named in any JSON file of the folder,
and pickles found by content (protocol 0–5 streams under any name, .npy object arrays, zip-based files that
may hold pickles). Each is a 400 naming the file, and leaves no version, job or file behind."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest

from console.registry.importing import add_version_from_upload
from engine import pickles
from engine.inspect import inspect_folder
from tests.modelfactory import zip_dir
from tests.test_importing import assert_refused, edit_json, folder_zip
from tests.test_upload_api import assert_refused as assert_api_refused
from tests.test_upload_api import post_file, storage_snapshot

pytestmark = pytest.mark.django_db


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write(name: str, data: bytes):  # type: ignore[no-untyped-def]
    return lambda d: (d / name).parent.mkdir(parents=True, exist_ok=True) or (d / name).write_bytes(data)


def write_json(name: str, value: object):  # type: ignore[no-untyped-def]
    return write(name, json.dumps(value).encode())


@pytest.mark.parametrize(("change", "file", "says"), [
    (lambda d: edit_json(d / "config.json", trust_remote_code=True), "config.json", "trust_remote_code"),
    (write_json("preprocessor_config.json", {"auto_map": {"AutoImageProcessor": "p.P"}}),
     "preprocessor_config.json", "auto_map"),
    (write_json("generation_config.json", {"extra": [{"deep": {"trust_remote_code": True}}]}),
     "generation_config.json", "trust_remote_code"),
    (write_json("sub/processor_config.json", {"auto_map": "x.Y"}), "sub/processor_config.json", "auto_map"),
], ids=["trust-remote-code-in-config", "auto-map-in-preprocessor", "nested-trust-remote-code", "auto-map-in-subfolder"])
def test_remote_code_named_in_any_json_file_is_refused_naming_the_file(llm, bob, llama_dir, tmp_path, change, file, says):
    upload = folder_zip(tmp_path, llama_dir, change)
    exc = assert_refused(lambda: add_version_from_upload(llm, upload, bob), "remote_code_refused", says)
    assert f"'{file}'" in exc.message


@pytest.mark.parametrize(("change", "file", "says"), [
    (write("tokenizer.data", pickle.dumps({"a": [1, 2.5, "x"]}, protocol=0)), "tokenizer.data", "is a Python pickle"),
    (write("notes.txt", pickle.dumps(["w", b"x"], protocol=1)), "notes.txt", "is a Python pickle"),
    (write("extra/weights.raw", pickle.dumps(list(range(300_000)), protocol=0)), "extra/weights.raw",
     "is a Python pickle"),  # larger than the sniffed megabyte
    (write("big.dat", pickle.dumps({"w": os.urandom(3 * 1024 * 1024)}, protocol=5)), "big.dat", "is a Python pickle"),
    (write("embeddings.npy", npy(np.array([{"a": 1}, None], dtype=object))), "embeddings.npy", "Python objects"),
    (write("arrays.npz", npz(a=np.zeros(3))), "arrays.npz", "zip container"),
], ids=["protocol-0", "protocol-1", "protocol-0-large", "protocol-5-large", "npy-object-array", "npz"])
def test_a_pickle_is_refused_by_its_content_naming_the_file(llm, bob, llama_dir, tmp_path, change, file, says):
    upload = folder_zip(tmp_path, llama_dir, change)
    exc = assert_refused(lambda: add_version_from_upload(llm, upload, bob), "pickle_refused", says)
    assert f"'{file}'" in exc.message


def test_harmless_files_beside_the_model_are_not_mistaken_for_pickles(llama_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(llama_dir, folder)
    (folder / "README.md").write_text("hello. (a) model card: 1. 2. 3.\n")
    (folder / "numbers.npy").write_bytes(npy(np.arange(10, dtype=np.float32)))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    # a token named auto_map in a vocabulary is no remote code
    (folder / "vocab.json").write_text(json.dumps({"auto_map": 5, "trust_remote_code": 6}))
    assert inspect_folder(folder).architecture == "LlamaForCausalLM"


def test_a_safetensors_header_that_starts_like_a_pickle_protocol_is_not_one():
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (0x0380 - len(header))  # its length's first bytes read 0x80 0x03, PROTO 3
    data = struct.pack("<Q", len(header)) + header + bytes(4)
    assert data[:2] == b"\x80\x03"
    assert not pickles.is_pickle_stream(data, complete=True)


def test_the_api_answers_400_naming_the_pickle_and_keeps_nothing(maintainer_api, llm, llama_dir, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(llama_dir, folder)
    (folder / "special_tokens.bin0").write_bytes(pickle.dumps({"x": 1}, protocol=0))
    before = storage_snapshot()
    archive = zip_dir(folder, tmp_path / "m.zip").read_bytes()
    assert_api_refused(post_file(maintainer_api, "m.zip", archive), 400, "pickle_refused", "'special_tokens.bin0'", before)


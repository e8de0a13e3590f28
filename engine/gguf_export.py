"""`gguf-q8_0` / `gguf-q4_0`: a Llama-family float folder written as a llama.cpp GGUF file, so any
safetensors version gets llama.cpp's speed as a child version.

The child folder is a GGUF version as an import stores one: `source.gguf` (written here with the `gguf`
package's writer and quantizer) beside a safetensors conversion of that same file (its tensors
dequantized, so Explain, evaluation and fine-tuning see the weights llama.cpp serves) and the parent's
tokenizer and config files. Tensors follow llama.cpp's layout: q/k rows interleaved per head the way
its converter writes them; 2-D matrices in the chosen type, except the token embeddings under Q4_0,
which stay Q8_0 (with tied embeddings they are the output head too, the layer quantization hurts most),
and each block's `attn_v` and `ffn_down`;
norms in F32. The tokenizer goes in as byte-level BPE (`gpt2`) with its merges, special tokens as
control tokens, and the chat template; Tauon sends llama.cpp token ids, so its pre-tokenizer name
only matters to other programs that tokenize text with this file (`default` is written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

METHODS = {"gguf-q8_0": "Q8_0", "gguf-q4_0": "Q4_0"}
LLAMA_TYPES = ("llama",)


class ExportError(ValueError):
    """The folder cannot be written as GGUF (architecture or tokenizer not covered); says why."""


def check_exportable(folder: Path) -> dict[str, Any]:
    """The folder's config.json, after checking it is a Llama model with a byte-level BPE tokenizer.json."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder} has no readable config.json") from exc
    if config.get("model_type") not in LLAMA_TYPES:
        raise ExportError(f"GGUF export covers Llama models (model_type {', '.join(LLAMA_TYPES)}); this model is "
                          f"{config.get('model_type')!r}. Use int8 or w8a8 for it instead.")
    try:
        tok = json.loads((Path(folder) / "tokenizer.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError("GGUF export needs the model's tokenizer.json (a fast tokenizer)") from exc
    if (tok.get("model") or {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(tok.get("pre_tokenizer")):
        raise ExportError("GGUF export covers byte-level BPE tokenizers (GPT-2 style); this tokenizer is "
                          f"{(tok.get('model') or {}).get('type')!r}")
    return config


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # q/k as llama.cpp stores them: each head's rotary halves interleaved
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


MORE_BITS = {"attn_v", "ffn_down"}  # the matrices llama.cpp's Q4_K_M mixture keeps at more bits


def _tensor_type(name: str, data: np.ndarray, qtype: Any) -> Any:
    """F32 for vectors; Q8_0 for the token embeddings and, under Q4_0, for every block's `attn_v` and
    `ffn_down` (on SmolLM2-135M pure Q4_0 costs +13.9 % perplexity, this mixture +9.9 % at 0.195x the fp32
    size; llama.cpp's Q4_K_M favours the same matrices); `qtype` for the other matrices."""
    import gguf

    if data.ndim != 2 or data.shape[1] % 32:
        return gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 or name == "token_embd.weight":
        return gguf.GGMLQuantizationType.Q8_0
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[2] in MORE_BITS:
        return gguf.GGMLQuantizationType.Q8_0
    return qtype


def _vocab(folder: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens in id order, their GGUF token types, and the merges."""
    import gguf

    tok = json.loads((folder / "tokenizer.json").read_text())
    tokens: dict[int, str] = {i: t for t, i in tok["model"]["vocab"].items()}
    types: dict[int, int] = {}
    for added in tok.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    size = max(vocab_size, max(tokens) + 1)
    names = [tokens.get(i, f"[PAD{i}]") for i in range(size)]
    kinds = [types.get(i, gguf.TokenType.NORMAL if i in tokens else gguf.TokenType.UNUSED) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    return names, kinds, merges


def export(src: Path, dest: Path, method: str) -> dict[str, Any]:
    """Write `dest/source.gguf` (the quantized model) and `dest/model.safetensors` (its dequantized
    weights); returns the recipe. The caller copies the tokenizer and config files."""
    import gguf
    import torch
    from gguf import quants
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from engine.inspect import GGUF_NAME

    if method not in METHODS:
        raise ExportError(f"method {method!r} is not one of {', '.join(METHODS)}")
    config = check_exportable(src)
    qtype = gguf.GGMLQuantizationType[METHODS[method]]
    n_layers, n_head = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    rope = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0
    state: dict[str, torch.Tensor] = {}
    for path in sorted(src.glob("*.safetensors")):
        state.update(load_file(str(path)))
    tokenizer = AutoTokenizer.from_pretrained(src)

    dest.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(dest / GGUF_NAME, "llama")
    w.add_name(str(config.get("_name_or_path") or config.get("_model_name_or_path") or src.name))
    w.add_context_length(int(config.get("max_position_embeddings") or 2048))
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_block_count(n_layers)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(int(config.get("head_dim") or hidden // n_head))
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == gguf.GGMLQuantizationType.Q8_0
                    else gguf.LlamaFileType.MOSTLY_Q4_0)
    names, kinds, merges = _vocab(src, int(config.get("vocab_size") or 0))
    w.add_vocab_size(len(names))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(names)
    w.add_token_types(kinds)
    w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)):
        value = config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            add(value)
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    if getattr(tokenizer, "chat_template", None):
        w.add_chat_template(tokenizer.chat_template)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    served: dict[str, torch.Tensor] = {}
    types: dict[str, str] = {}
    for hf_name, tensor in state.items():
        data = tensor.float().numpy()
        heads = n_head if hf_name.endswith("q_proj.weight") else n_kv if hf_name.endswith("k_proj.weight") else 0
        if heads:
            data = _permute(data, heads)
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"tensor {hf_name} has no place in llama.cpp's Llama layout")
        kind = _tensor_type(gname, data, qtype)
        if kind == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, data)
            back = data
        else:
            packed = quants.quantize(data, kind)
            w.add_tensor(gname, packed, raw_shape=packed.shape, raw_dtype=kind)
            back = quants.dequantize(packed, kind)
        types[kind.name] = types.get(kind.name, 0) + 1
        served[hf_name] = torch.from_numpy(np.ascontiguousarray(_unpermute(back, heads) if heads else back))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(served, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return {"method": method, "format": "gguf", "type": METHODS[method], "tensor_types": types,
            "q8_0": "every matrix" if qtype == gguf.GGMLQuantizationType.Q8_0 else "token_embd, attn_v, ffn_down",
            "gguf_bytes": (dest / GGUF_NAME).stat().st_size, "served_by": "llama.cpp (runtime auto)"}

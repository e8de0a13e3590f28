"""A tiny random Llama written as a GGUF file, the way llama.cpp's converter lays it out.

The vocabulary is byte-level BPE (256 byte tokens, a few merges, two specials) so transformers
can rebuild the tokenizer from the GGUF metadata in well under a second."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"]
SPECIALS = ["<s>", "</s>"]


def _byte_tokens() -> list[str]:
    # GPT-2's bytes_to_unicode: every byte gets a printable stand-in.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(keep, codes, strict=True))]


def tiny_vocab() -> list[str]:
    return _byte_tokens() + [m.replace(" ", "") for m in MERGES] + SPECIALS


def _permute(w, n_head: int):  # type: ignore[no-untyped-def]
    # llama.cpp stores q/k rotated halves interleaved; transformers undoes this on load.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama_gguf(path: Path, *, seed: int = 0, chat_template: bool = True):  # type: ignore[no-untyped-def]
    """Write a 2-layer Llama (hidden 32) as F32 GGUF; return the transformers model it came from."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = tiny_vocab()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1, tie_word_embeddings=False,
                         rms_norm_eps=1e-5, rope_theta=10000.0)
    model = LlamaForCausalLM(config).eval()

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(len(vocab))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab)
    w.add_token_types([gguf.TokenType.NORMAL] * (len(vocab) - 2) + [gguf.TokenType.CONTROL] * 2)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(config.bos_token_id)
    w.add_eos_token_id(config.eos_token_id)
    if chat_template:
        w.add_chat_template(CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        data = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model

"""Int8 Linear layers on FBGEMM, swapped in at load time.

Both modes store weights as int8 with one scale per output channel and run FBGEMM's int8 GEMM
(`quantized::linear_with_input_q_dq_qweight_dq_output_fp32`) with activations quantized per
token (each row scaled to ±63, 7 bits, which is what FBGEMM's u8×s8 kernel takes without
saturating):

- `int8` (safe): weight-only numerics. Each row is split into its 7-bit rounding and the
  rounding residual (scaled up by 126), both rows go through one GEMM call, and the two results
  are recombined: activations keep ~14 bits, so the only loss is the int8 weights.
- `w8a8` (fast): one 7-bit pass, with SmoothQuant-style per-input-channel smoothing calibrated
  on a short text (keeping `down_proj`'s largest input channels in float32 as well was measured
  and gained nothing: bench/README.md).

On this CPU torch's own int8 weight-only kernel (`_weight_int8pack_mm`) is 10-60x slower than
float32 and `torch._int_mm` ~100x slower, so FBGEMM is the kernel both modes use; CUDA uses
torchao where installed."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from engine.int8_format import FORMAT, MARKER, STORED_MODES, WEIGHTS

QMAX = 63.0  # 7-bit activations: u8 in [1, 127] around zero point 64
RESIDUAL = 126.0  # residual rows (in [-0.5, 0.5]) are scaled to ±63 before the second pass


@dataclass(slots=True)
class W8A8Options:
    alpha: float = 0.5  # SmoothQuant migration strength
    calibration_tokens: int = 512


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear, *, two_pass: bool, smooth: torch.Tensor | None = None):
        super().__init__()
        w = linear.weight.detach().float().clone()  # [N, K]
        in_scale = torch.ones(w.shape[1])
        if smooth is not None:
            w *= smooth[None, :]
            in_scale /= smooth
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0,
                                            torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self._setup(qw, two_pass=two_pass, in_scale=None if smooth is None else in_scale, bias=bias)

    def _setup(self, qw: torch.Tensor, *, two_pass: bool, in_scale: torch.Tensor | None,
               bias: torch.Tensor | None) -> None:
        self.out_features, self.in_features = qw.shape
        self.two_pass, self.in_scale = two_pass, in_scale
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.packed = torch.ops.quantized.linear_prepack(qw, None)
        self.bias = bias

    @classmethod
    def from_int8(cls, qweight: torch.Tensor, scale: torch.Tensor, *, two_pass: bool,
                  in_scale: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> Int8Linear:
        """Rebuild from stored int8 rows [N, K] and their scales [N]: packing only, no re-quantizing."""
        qw = torch._make_per_channel_quantized_tensor(qweight.to(torch.int8), scale.double(),
                                                      torch.zeros(len(scale), dtype=torch.long), 0)
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(qw, two_pass=two_pass, in_scale=None if in_scale is None else in_scale.float(),
                    bias=None if bias is None else bias.float())
        return self

    def int8_state(self) -> dict[str, torch.Tensor]:
        """What `from_int8` takes back: int8 rows, per-row scales, the input scaling and bias if any."""
        qw, _ = torch.ops.quantized.linear_unpack(self.packed)
        state = {"qweight": qw.int_repr().contiguous(), "scale": qw.q_per_channel_scales().float()}
        if self.in_scale is not None:
            state["in_scale"] = self.in_scale
        if self.bias is not None:
            state["bias"] = self.bias
        return state

    def to_linear(self) -> nn.Linear:
        """The float Linear these int8 rows stand for (for devices without FBGEMM's kernels)."""
        state = self.int8_state()
        w = state["qweight"].float() * state["scale"][:, None]
        if "in_scale" in state:
            w = w * state["in_scale"][None, :]
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(w)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)  # [M, K]
        if self.in_scale is not None:
            x = x * self.in_scale
        # per-token scale [M, 1]: each row spans ±63 after dividing by it
        a = torch.linalg.vector_norm(x, float("inf"), dim=1, keepdim=True).clamp_(min=1e-12).div_(QMAX)
        if self.two_pass:
            m = x.shape[0]
            rows = x.new_empty((2 * m, self.in_features))  # [x / a ; (x / a - round(x / a)) * 126]
            xn, res = rows[:m], rows[m:]
            torch.div(x, a, out=xn)
            torch.round(xn, out=res)
            res.sub_(xn).mul_(-RESIDUAL)
            y2 = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(rows, 1.0, 64, self.packed)
            y = torch.add(y2[:m], y2[m:], alpha=1.0 / RESIDUAL)
        else:
            y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x / a, 1.0, 64, self.packed)
        y = y * a
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)


def _linears(stack: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for layer in stack.layers:
        for name, child in layer.named_children():
            if isinstance(child, nn.Linear):
                found.append((layer, name, child))
    if isinstance(stack.lm_head, nn.Linear):
        found.append((stack, "lm_head", stack.lm_head))
    return found


def _input_absmax(stack: nn.Module, ids: list[int], linears: list[nn.Linear]) -> dict[int, torch.Tensor]:
    from engine.runner import full_forward

    stats: dict[int, torch.Tensor] = {}

    def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        m = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0).float()
        stats[id(mod)] = torch.maximum(stats[id(mod)], m) if id(mod) in stats else m

    handles = [li.register_forward_pre_hook(hook) for li in linears]
    try:
        full_forward(stack, ids)
    finally:
        for h in handles:
            h.remove()
    return stats


def quantize_stack(stack: nn.Module, mode: str, *, tokenizer: object, device: torch.device,
                   options: W8A8Options | None = None, calibration_text: str | None = None) -> int:
    """Swap the stack's Linear layers (attention, MLP, lm_head) for int8 ones, in place. `w8a8`
    calibrates on `calibration_text` (default: engine.calibration's built-in text). Returns how many
    calibration tokens it used (0 for the modes that take none)."""
    if device.type != "cpu":
        _quantize_cuda(stack, mode)
        return 0
    if mode not in ("int8", "w8a8"):
        raise ValueError(f"quantization {mode!r} runs on CUDA only; on CPU use int8 or w8a8")
    targets = _linears(stack)
    if mode == "int8":
        for parent, name, linear in targets:
            setattr(parent, name, Int8Linear(linear, two_pass=True))
        return 0
    opts = options or W8A8Options()
    from engine.calibration import CALIBRATION_TEXT

    ids = tokenizer(calibration_text or CALIBRATION_TEXT)["input_ids"][: opts.calibration_tokens]  # type: ignore[operator]
    stats = _input_absmax(stack, ids, [li for _, _, li in targets])
    for parent, name, linear in targets:
        act = stats[id(linear)].clamp(min=1e-5)
        wmax = linear.weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
        smooth = (act.pow(opts.alpha) / wmax.pow(1 - opts.alpha)).clamp(min=1e-2, max=1e3)
        setattr(parent, name, Int8Linear(linear, two_pass=False, smooth=smooth))
    return len(ids)


def _quantize_cuda(stack: nn.Module, mode: str) -> None:
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:  # pragma: no cover - needs a GPU machine
        raise ValueError("CUDA quantization needs torchao (`pip install torchao`)") from exc
    configs = {"int8": Int8WeightOnlyConfig, "int4": Int4WeightOnlyConfig}
    if mode not in configs:
        raise ValueError(f"quantization {mode!r} is a CPU mode; on CUDA use int8 or int4 (or dtype bfloat16)")
    quantize_(stack.layers, configs[mode]())


# --- int8 folders on disk: the format (marker, names, `is_stored`) is in engine.int8_format ---------


class Int8Embedding(nn.Module):
    """Token embeddings kept as int8 rows with one scale per row; looked-up rows come out float32."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.register_buffer("qweight", qweight.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.float().contiguous())

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        w = embedding.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        return cls(torch.round(w / scale[:, None]).clamp_(-127, 127), scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qweight).float() * self.scale[ids].unsqueeze(-1)

    def to_embedding(self) -> nn.Embedding:
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim)
        with torch.no_grad():
            emb.weight.copy_(self.qweight.float() * self.scale[:, None])
        return emb


def save_quantized(stack: nn.Module, dest: Path, *, mode: str, tied: bool) -> dict[str, Any]:
    """Write a quantized stack's weights to `dest` (model.safetensors + MARKER); returns the marker's
    content. The token embeddings are quantized here; a tied lm_head in `int8` mode holds exactly the
    embedding's int8 rows, so they are stored once."""
    from safetensors.torch import save_file

    if mode not in STORED_MODES:
        raise ValueError(f"only {', '.join(STORED_MODES)} stacks are stored as int8")
    head = stack.lm_head
    share = tied and mode == "int8" and isinstance(head, Int8Linear) and head.in_scale is None
    if share:
        state = head.int8_state()
        embed = Int8Embedding(state["qweight"], state["scale"])
    else:
        embed = Int8Embedding.from_embedding(stack.embed)
    tensors: dict[str, torch.Tensor] = {"embed.qweight": embed.qweight, "embed.scale": embed.scale}
    for name, module in stack.named_modules():
        if name == "embed" or (share and name == "lm_head"):
            continue
        if isinstance(module, Int8Linear):
            tensors.update({f"{name}.{k}": v for k, v in module.int8_state().items()})
        elif isinstance(module, nn.Linear):
            raise ValueError(f"{name} is still a float Linear; quantize the stack before saving it")
        else:
            tensors.update({f"{name}.{k}": p.detach().float().contiguous()
                            for k, p in module.named_parameters(recurse=False)})
    meta = {"format": FORMAT, "mode": mode, "embedding": "int8", "lm_head": "embed" if share else "stored"}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest / WEIGHTS), metadata={"format": "pt", "tauon": FORMAT})
    (dest / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load_quantized(folder: Path, *, device: torch.device, dtype: torch.dtype = torch.float32
                   ) -> tuple[nn.Module, nn.Module]:
    """(model, stack) for a folder `save_quantized` wrote. The Hugging Face model is only a skeleton
    on the meta device (its config and generation settings); the stack holds every weight. On a
    device other than the CPU, the int8 layers become float ones (FBGEMM runs on CPUs only)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from engine.errors import UnsupportedModel
    from engine.runner import build_stack

    folder = Path(folder)
    meta = json.loads((folder / MARKER).read_text())
    if meta.get("format") != FORMAT or meta.get("mode") not in STORED_MODES:
        raise UnsupportedModel(f"{folder / MARKER}: unknown int8 format {meta.get('format')!r} "
                               f"(this Tauon reads {FORMAT})")
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    stack = build_stack(model)
    tensors = load_file(str(folder / WEIGHTS))
    two_pass = meta["mode"] == "int8"
    stack.embed = Int8Embedding(tensors.pop("embed.qweight"), tensors.pop("embed.scale"))
    for name in sorted(k.removesuffix(".qweight") for k in list(tensors) if k.endswith(".qweight")):
        owner, _, attr = name.rpartition(".")
        layer = Int8Linear.from_int8(tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.scale"), two_pass=two_pass,
                                     in_scale=tensors.pop(f"{name}.in_scale", None),
                                     bias=tensors.pop(f"{name}.bias", None))
        setattr(stack.get_submodule(owner) if owner else stack, attr, layer)
    if meta["lm_head"] == "embed":
        stack.lm_head = Int8Linear.from_int8(stack.embed.qweight, stack.embed.scale, two_pass=two_pass)
    for key, tensor in tensors.items():
        owner, _, attr = key.rpartition(".")
        setattr(stack.get_submodule(owner), attr, nn.Parameter(tensor, requires_grad=False))
    if hasattr(stack, "rotary"):  # computed from the config, never stored
        stack.rotary = type(stack.rotary)(config=config)
    missing = [n for n, t in (*stack.named_parameters(), *stack.named_buffers()) if t.is_meta]
    if missing:
        raise UnsupportedModel(f"{folder / WEIGHTS} lacks {', '.join(missing[:5])}; the folder is incomplete")
    if device.type != "cpu":
        _to_float(stack)
        stack.to(device=device, dtype=dtype)
    return model, stack


def _to_float(stack: nn.Module) -> None:
    for name, module in list(stack.named_modules()):
        if isinstance(module, Int8Linear | Int8Embedding):
            owner, _, attr = name.rpartition(".")
            float_module = module.to_linear() if isinstance(module, Int8Linear) else module.to_embedding()
            setattr(stack.get_submodule(owner) if owner else stack, attr, float_module)

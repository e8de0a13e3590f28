"""Int8 Linear layers on FBGEMM, swapped in at load time.

Both modes store weights as int8 with one scale per output channel and run FBGEMM's int8 GEMM
(`quantized::linear_with_input_q_dq_qweight_dq_output_fp32`) with activations quantized per
token (each row scaled to ±63, 7 bits, which is what FBGEMM's u8×s8 kernel takes without
saturating):

- `int8` (safe): weight-only numerics. Each row is split into its 7-bit rounding and the
  rounding residual (scaled up by 126), both rows go through one GEMM call, and the two results
  are recombined: activations keep ~14 bits, so the only loss is the int8 weights.
- `w8a8` (fast): one 7-bit pass, with SmoothQuant-style per-input-channel smoothing calibrated
  on a short text, and the largest input channels of `down_proj` kept in float32 (the MLP output
  projection sees the activation outliers).

On this CPU torch's own int8 weight-only kernel (`_weight_int8pack_mm`) is 10-60x slower than
float32 and `torch._int_mm` ~100x slower, so FBGEMM is the kernel both modes use; CUDA uses
torchao where installed."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

QMAX = 63.0  # 7-bit activations: u8 in [1, 127] around zero point 64
RESIDUAL = 126.0  # residual rows (in [-0.5, 0.5]) are scaled to ±63 before the second pass


@dataclass(slots=True)
class W8A8Options:
    alpha: float = 0.5  # SmoothQuant migration strength
    outlier_channels: int = 0  # kept in float32 for layers named in `outlier_layers` (measured: no gain here)
    outlier_layers: tuple[str, ...] = ("down",)
    calibration_tokens: int = 512


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear, *, two_pass: bool, smooth: torch.Tensor | None = None,
                 outliers: torch.Tensor | None = None):
        super().__init__()
        w = linear.weight.detach().float().clone()  # [N, K]
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.two_pass = two_pass
        in_scale = torch.ones(self.in_features)
        if smooth is not None:
            w *= smooth[None, :]
            in_scale /= smooth
        self.outliers = outliers
        self.w_outliers: torch.Tensor | None = None
        if outliers is not None:
            self.w_outliers = linear.weight.detach().float()[:, outliers].t().contiguous()  # [k, N]
            w[:, outliers] = 0
            in_scale[outliers] = 0
        self.in_scale = None if smooth is None and outliers is None else in_scale
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0,
                                            torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, None)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)  # [M, K]
        xo = x[:, self.outliers] if self.outliers is not None else None
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
        if xo is not None:
            y = torch.addmm(y, xo, self.w_outliers)
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
                   options: W8A8Options | None = None) -> None:
    """Swap the stack's Linear layers (attention, MLP, lm_head) for int8 ones, in place."""
    if device.type != "cpu":
        _quantize_cuda(stack, mode)
        return
    if mode not in ("int8", "w8a8"):
        raise ValueError(f"quantization {mode!r} runs on CUDA only; on CPU use int8 or w8a8")
    targets = _linears(stack)
    if mode == "int8":
        for parent, name, linear in targets:
            setattr(parent, name, Int8Linear(linear, two_pass=True))
        return
    opts = options or W8A8Options()
    from engine.calibration import CALIBRATION_TEXT

    ids = tokenizer(CALIBRATION_TEXT)["input_ids"][: opts.calibration_tokens]  # type: ignore[operator]
    stats = _input_absmax(stack, ids, [li for _, _, li in targets])
    for parent, name, linear in targets:
        act = stats[id(linear)].clamp(min=1e-5)
        outliers = None
        if name in opts.outlier_layers and opts.outlier_channels:
            outliers = act.topk(opts.outlier_channels).indices.sort().values
        wmax = linear.weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
        smooth = (act.pow(opts.alpha) / wmax.pow(1 - opts.alpha)).clamp(min=1e-2, max=1e3)
        setattr(parent, name, Int8Linear(linear, two_pass=False, smooth=smooth, outliers=outliers))


def _quantize_cuda(stack: nn.Module, mode: str) -> None:
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:  # pragma: no cover - needs a GPU machine
        raise ValueError("CUDA quantization needs torchao (`pip install torchao`)") from exc
    configs = {"int8": Int8WeightOnlyConfig, "int4": Int4WeightOnlyConfig}
    if mode not in configs:
        raise ValueError(f"quantization {mode!r} is a CPU mode; on CUDA use int8 or int4 (or dtype bfloat16)")
    quantize_(stack.layers, configs[mode]())

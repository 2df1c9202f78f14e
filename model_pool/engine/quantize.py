"""Quantized weights for the backbone (--quantization none|int8|fp8|int4), applied at load with torchao.

torchao is PyTorch's own quantization library: `quantize_` swaps the weight of each chosen nn.Linear for a tensor
subclass (int8 values plus per-row scales, and so on) that dispatches F.linear to its own kernel, so transformers'
prefill and our decode step call the same modules as before and torch.compile traces through them.

Only the decoder layers' projections are quantized (attention q/k/v/o, the text MLP and the audio MLP: 92% of the
real model's parameters). The text and audio embeddings, the audio head, the norms and the codec keep the device's
precision (bf16 on a GPU, float32 on a CPU): they are small, and the head's logits are what sampling reads.

- int8: weight-only, one scale per output row; the activations stay in bf16/float32. Any device (the CPU too).
- fp8: e4m3 weights with a scale per row, activations quantized per row at run time, float8 matrix products: GPUs
  with fp8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell).
- int4: weight-only, groups of 128 with a scale and zero point each, torch's tinygemm kernel: CUDA GPUs of compute
  capability 8.0+ (Ampere and later).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..defaults import QUANTIZATIONS
from ..errors import ModelLoadError

INT4_GROUP = 128
INT4_PAD_IN, INT4_PAD_OUT = 1024, 8  # tinygemm's packing pads in_features and out_features to these multiples
GIB = 1024**3


def backbone_linear(module: torch.nn.Module, fqn: str) -> bool:
    """The layers quantization applies to: the decoder layers' linear projections (never the audio head)."""
    return isinstance(module, torch.nn.Linear) and fqn.startswith("model.layers.")


def check(quantization: str, device: torch.device) -> None:
    """Refuse, before any weight is read, a quantization this device cannot run; the message says what to use."""
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"--quantization {quantization} needs torchao (pip install -r requirements.txt): "
                             f"{exc}") from exc
    if quantization == "int8":
        if device.type not in ("cpu", "cuda"):
            raise ModelLoadError(f"--quantization int8 runs on a CPU or a CUDA GPU, not on {device}: use "
                                 "--quantization none there, or --device cpu")
        return
    if device.type != "cuda":
        raise ModelLoadError(f"--quantization {quantization} needs a CUDA GPU (device {device}): on a CPU use "
                             "--quantization int8, or none")
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if quantization == "fp8" and (major, minor) < (8, 9):
        raise ModelLoadError(f"--quantization fp8 needs a GPU with fp8 tensor cores (compute capability 8.9 or "
                             f"higher: Ada, Hopper, Blackwell); {device} is {name} ({major}.{minor}): use "
                             "--quantization int8 or int4")
    if quantization == "int4" and major < 8:
        raise ModelLoadError(f"--quantization int4 needs compute capability 8.0 or higher (Ampere or later) for "
                             f"torch's int4 kernel; {device} is {name} ({major}.{minor}): use --quantization int8")


def _config(quantization: str):
    # set_inductor_config=False: torchao would otherwise switch on process-wide inductor options (coordinate
    # descent tuning among them) that lengthen every torch.compile in the process, ours included.
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    if quantization == "int8":
        return Int8WeightOnlyConfig(granularity=PerRow(), set_inductor_config=False)
    if quantization == "fp8":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    if quantization == "int4":
        return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d",
                                    set_inductor_config=False)
    raise ValueError(quantization)


def apply(model: torch.nn.Module, quantization: str, device: torch.device) -> None:
    """Quantize the backbone's linear layers in place, each moved to `device` first (one layer at a time: a GPU
    never holds the whole model in bf16). The caller moves the rest of the model to `device`."""
    check(quantization, device)
    if quantization == "none":
        return
    from torchao.quantization import quantize_

    quantize_(model, _config(quantization), filter_fn=backbone_linear, device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the bf16 originals' blocks: the memory plan counts what the device has free


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor's storage takes. A torchao tensor reports its logical size (as if bf16): count its parts."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None or type(tensor) in (torch.Tensor, torch.nn.Parameter):
        return tensor.numel() * tensor.element_size()
    names, _ = flatten()
    return sum(tensor_bytes(part) for name in names if (part := getattr(tensor, name)) is not None)


def detect(model: torch.nn.Module) -> str:
    """The quantization the model's weights are in, read from the first backbone linear's weight type."""
    for fqn, module in model.named_modules():
        if backbone_linear(module, fqn):
            kind = type(module.weight).__name__
            if kind.startswith("Int8"):
                return "int8"
            if kind.startswith("Float8"):
                return "fp8"
            if kind.startswith("Int4"):
                return "int4"
            return "none"
    return "none"


@dataclass(frozen=True)
class WeightReport:
    quantization: str
    bytes: int  # what the weights (parameters and buffers) take on the device
    unquantized_bytes: int  # the same checkpoint unquantized, in the device's precision
    dtype: str  # the precision of everything left unquantized (bf16 on a GPU, float32 on a CPU)

    def describe(self) -> str:
        share = self.bytes / self.unquantized_bytes if self.unquantized_bytes else 1.0
        return (f"weights {self.bytes / GIB:.2f} GiB ({self.quantization}; unquantized {self.dtype} "
                f"{self.unquantized_bytes / GIB:.2f} GiB, {share:.0%})")

    def as_dict(self) -> dict:
        return {"quantization": self.quantization, "bytes": self.bytes, "unquantized_bytes": self.unquantized_bytes,
                "dtype": self.dtype}


def weight_report(model: torch.nn.Module) -> WeightReport:
    tensors = list(model.parameters()) + list(model.buffers())
    dtype = str(model.dtype).removeprefix("torch.")
    # A quantized weight keeps its original dtype and shape as its logical ones: numel x element_size is the
    # unquantized figure.
    unquantized = sum(t.numel() * t.element_size() for t in tensors)
    return WeightReport(detect(model), sum(tensor_bytes(t) for t in tensors), unquantized, dtype)


def _linear_bytes(out_features: int, in_features: int, quantization: str, element: int) -> int:
    """One linear layer's weight as torchao stores it (the layouts counted by tensor_bytes on real ones)."""
    if quantization == "int8":  # int8 values, a float32 scale and an int8 zero point per row
        return out_features * (in_features + 4 + 1)
    if quantization == "fp8":  # float8 values and a float32 scale per row
        return out_features * (in_features + 4)
    if quantization == "int4":  # packed nibbles of the padded matrix, a bf16 scale and zero per group of 128
        padded_in = -(-in_features // INT4_PAD_IN) * INT4_PAD_IN
        padded_out = -(-out_features // INT4_PAD_OUT) * INT4_PAD_OUT
        return padded_out * padded_in // 2 + (padded_in // INT4_GROUP) * padded_out * 2 * 2
    return out_features * in_features * element


def estimate_bytes(model: torch.nn.Module, quantization: str, dtype: torch.dtype = torch.bfloat16) -> int:
    """The weights' bytes after `quantization`, counted from the shapes of an unquantized model (one built on the
    meta device is enough: no memory is touched). What the README's memory table is computed from."""
    element = torch.empty((), dtype=dtype).element_size()
    total, counted = 0, set()
    for fqn, module in model.named_modules():
        if backbone_linear(module, fqn):
            out_features, in_features = module.weight.shape
            total += _linear_bytes(out_features, in_features, quantization, element)
            counted.add(id(module.weight))
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in counted:
            total += tensor.numel() * (element if tensor.is_floating_point() else tensor.element_size())
    return total

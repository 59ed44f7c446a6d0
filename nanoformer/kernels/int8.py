"""Int8 linear layers: int8 weights with one symmetric scale per output row, activations quantized on the fly.

Inference only. Each weight row w is stored as round(w / s) in [-127, 127] with s = max|w| / 127
(CTranslate2's "int8" and PyTorch's per-channel dynamic quantization use the same scheme); the
input is quantized per call with one scale per row (token), the product runs in int8 on the GEMM
torch ships for x86 (fbgemm, `quantized::linear_dynamic`), and the result comes back in float32. The
state dict holds plain tensors (int8 weight, float32 scales, bias), so a quantized checkpoint is
ordinary safetensors.

One exception, for speed: a small weight multiplied at a few rows (a decoding step of a narrow
model) runs in float32 on its dequantized int8 values, weight-only int8. There the int8 call's
fixed cost (quantizing the input, scaling each row) is more than the whole float32 product
(see `Int8Linear.forward`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.kernels.gemm import few_rows, small_weight


# The op's overload itself: calling through the packet checks every argument in Python for
# script objects first, which cost as much as a small product at batch 1.
_linear_dynamic = torch.ops.quantized.linear_dynamic.default


def int8_available() -> bool:
    """True where torch has the x86 int8 GEMM (fbgemm): the int8 layers need it."""
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 weight, float32 scale per row): weight ≈ int8 · scale[:, None]."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """`nn.Linear`'s forward with an int8 weight (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = None  # fbgemm's prepacked weight, built on first use
        self._dequantized: Tensor | None = None  # the float32 weight of small products, built on first use
        self.small = small_weight(self.weight_int8)  # multiplied in float32 at a few rows (`forward`)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Int8Linear:
        q = cls(layer.in_features, layer.out_features, bias=layer.bias is not None)
        q.weight_int8, q.weight_scale = quantize_rows(layer.weight)
        if layer.bias is not None:
            q.bias = layer.bias.detach().float().clone()
        return q

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = self._dequantized = None  # new weights: pack again

    def packed(self):
        if self._packed is None:
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():  # quantized tensors are deprecated for new code; the kernels are not
                warnings.simplefilter("ignore", UserWarning)
                weight = torch._make_per_channel_quantized_tensor(self.weight_int8, self.weight_scale.double(), zeros, 0)
                self._packed = torch.ops.quantized.linear_prepack(weight, None)
        return self._packed

    def dequantized(self) -> Tensor:
        """The float32 weight the int8 rows stand for: int8 · scale, once."""
        if self._dequantized is None:
            self._dequantized = self.weight_int8.float() * self.weight_scale[:, None]
        return self._dequantized

    def forward(self, x: Tensor) -> Tensor:
        # A small weight at a few rows: float32 on the dequantized weight. At 16 rows of a 128-wide
        # translator's layers (128 x 128 to 512 x 128), the int8 call took 38-67 µs against 13-32
        # µs in float32 (AMD Zen 4), and its decoding ran 1.04-1.33x faster in 7 of 8 runs (one
        # 0.95x; `benchmarks/small_products.py --int8`, docs/benchmarks.md "Small int8 products").
        # The bound is the float32 one of kernels/gemm.py, whose products there go to torch's own
        # kernel, as these do.
        if self.small and few_rows(x):
            return F.linear(x.float(), self.dequantized(), self.bias)
        # One activation scale per row (token), not per tensor: the kernel quantizes its input with
        # one scale, so each row is first divided by its own largest magnitude, and the result
        # multiplied back. A few outlier tokens then cost precision only in their own rows.
        x = x.float().contiguous()
        if x.numel() == x.shape[-1]:  # one row (decoding at batch 1): the kernel's scale is the row's own
            y = _linear_dynamic(x, self.packed(), False)
        else:
            row_scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
            y = _linear_dynamic(x / row_scale, self.packed(), False).mul_(row_scale)
        return y if self.bias is None else y.add_(self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """`nn.Embedding`'s lookup from int8 rows with one scale per row (the token tables of a quantized model)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, table: nn.Embedding) -> Int8Embedding:
        q = cls(table.num_embeddings, table.embedding_dim)
        q.weight_int8, q.weight_scale = quantize_rows(table.weight)
        return q

    @property
    def weight(self) -> Tensor:
        """The dequantized table (what a tied output layer or an exporter reads)."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight_int8[ids].float() * self.weight_scale[ids, None]

"""Matrix products of the linear layers on the faster of the two fp32 GEMMs that torch ships.

torch multiplies fp32 matrices on the CPU with MKL's sgemm. On AMD CPUs MKL does not run its
AVX-512 code, while oneDNN, the other GEMM library inside torch, does; the linear layers, the
fused output-layer loss and decoding then multiply through oneDNN
(`torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU backend emits for linear
layers), forward and backward. Measured peaks per CPU: docs/benchmarks.md, "The CPU, and which
GEMM the linear layers use". Results agree with `F.linear` to float32 rounding (another order of
summation), and a run stays reproducible: the choice depends on the machine, never on a timing.

The rule, in one place (`default_gemm`): oneDNN on AMD CPUs, torch's own kernels elsewhere, as
CTranslate2 picks its GEMM library by CPU vendor. Under that rule a product too small to repay
oneDNN's fixed cost per call still goes to torch's kernel (`_small_product`; decoding's products
at a few rows). The one override: `NANOFORMER_GEMM=onednn|aten` (`set_gemm_backend` sets the
same override from Python), which sends every product to the backend named. Nothing happens at
import: the CPU is read, and oneDNN prepared, on the first product that could use it.
Attention's own products (flash attention, `torch.bmm`) stay in torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.kernels.cpu import cpu_vendor

BACKENDS = ("auto", "onednn", "aten")
_choice: str | None = None  # set_gemm_backend's override; None reads NANOFORMER_GEMM


# oneDNN keeps the kernels it builds for each product shape, 1,024 by default, some of them
# megabytes each. Padding-free batches give every training step new row counts, so that cache
# only fills; 64 bounds its memory at no cost in speed (docs/benchmarks.md, "oneDNN's kernel
# cache"; benchmarks/onednn_shapes.py). Decoding reuses a few shapes per step, which 64 holds.
# A user's own setting wins; it must be in place before oneDNN builds its first kernel, hence
# set on first use.
_KERNEL_CACHE_CAPACITY = "64"


@functools.cache
def _prepare_onednn_linear() -> bool:
    """Bound oneDNN's kernel caches (before its first kernel), then check that its linear op runs."""
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):  # oneDNN's and torch's ideep's
        os.environ.setdefault(name, _KERNEL_CACHE_CAPACITY)
    try:
        op = torch.ops.mkldnn._linear_pointwise
        return torch.backends.mkldnn.is_available() and op(torch.ones(1, 2), torch.ones(3, 2), None, "none", [], "").shape == (1, 3)
    except (AttributeError, RuntimeError):
        return False


def default_gemm(vendor: str) -> str:
    """The rule: "onednn" on AMD CPUs (MKL's sgemm skips its AVX-512 code there), "aten" elsewhere."""
    return "onednn" if vendor == "AuthenticAMD" else "aten"


def set_gemm_backend(name: str | None) -> None:
    """Force "onednn" or "aten" for this process ("auto" or None: back to the default rule)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"GEMM backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    global _choice
    _choice = name


def gemm_backend() -> str:
    """The backend the CPU products use now: "onednn" or "aten"."""
    return _resolve(_choice, os.environ.get("NANOFORMER_GEMM"), cpu_vendor())


@functools.lru_cache(maxsize=16)
def _resolve(choice: str | None, variable: str | None, vendor: str) -> str:
    # Every linear layer asks, at every call: the answer is remembered for each set of inputs.
    name = _resolve_name(choice, variable)
    if name not in BACKENDS:
        raise ValueError(f"NANOFORMER_GEMM must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        name = default_gemm(vendor)
    return "onednn" if name == "onednn" and _prepare_onednn_linear() else "aten"


# Products that torch's own kernel multiplies faster than oneDNN even on AMD CPUs: through torch's
# wrapper a oneDNN call costs about 15-20 µs more than an MKL sgemm, which oneDNN's AVX-512 kernel
# repays only on larger products. The bound was set inside decoding steps, where it counts
# (docs/benchmarks.md, "Small products"; AMD Zen 4): the 128-wide Multi30k translator, whose
# layers (128 x 128, 128 x 384, 128 x 512, 512 x 128) all fall under it, decodes 1.3-1.5x faster
# greedy and 1.1x at beam 4; a 256-wide one decoded 2-5% slower with its 256 x 256 layers on
# torch's kernel and the rest on oneDNN, although alone, weights streaming from memory, that
# product is faster there (26 against 36 µs at 16 rows; `benchmarks/gemm_backends.py --phase
# small`). Training's products have thousands of rows.
SMALL_WEIGHT = 65_536  # elements
SMALL_SIDE = 128  # in or out features
SMALL_ROWS = 128


def small_weight(weight: Tensor) -> bool:
    """Whether a (out, in) weight is small enough that oneDNN's fixed cost per call does not pay (see above)."""
    return weight.dim() == 2 and weight.numel() <= SMALL_WEIGHT and min(weight.shape) <= SMALL_SIDE


def _small_product(x: Tensor, weight: Tensor) -> bool:
    """Whether this product goes to torch's kernel although oneDNN is the CPU's GEMM (see above).

    Only under the default rule: `NANOFORMER_GEMM=onednn` sends every product to oneDNN."""
    return small_weight(weight) and _auto() and few_rows(x)


def few_rows(x: Tensor) -> bool:
    """Whether the input (..., in) has at most SMALL_ROWS rows: a decoding step's, not training's."""
    return (x.numel() // x.shape[-1] if x.shape[-1] else 0) <= SMALL_ROWS


def _auto() -> bool:
    """Whether the backend comes from the default rule (no override)."""
    return _resolve_name(_choice, os.environ.get("NANOFORMER_GEMM")) == "auto"


@functools.lru_cache(maxsize=16)
def _resolve_name(choice: str | None, variable: str | None) -> str:
    return choice or (variable or "auto").strip().lower() or "auto"


def _use_onednn(*tensors: Tensor | None) -> bool:
    if gemm_backend() != "onednn":
        return False
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.float32 or t.numel() == 0):
            return False
    # A tracer (torch.onnx.export, torch.jit.trace) needs the standard op: exporters know no mkldnn ops.
    return not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    # A broadcast operand (stride 0, e.g. the gradient of `.sum()`) sends oneDNN into a
    # pathologically slow path (seconds for a 1000 x 256 x 1024 product): materialise it.
    if 0 in x.stride():
        x = x.contiguous()
    if weight.layout == torch.strided and 0 in weight.stride():
        weight = weight.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def weight_gradient(grad_out: Tensor, x: Tensor) -> Tensor:
    """grad_outᵀ · x for (rows, out) and (rows, in): the (out, in) weight gradient, maybe as a strided view.

    oneDNN is fastest here when the product's rows are the smaller side, so the wide side's
    gradient is computed transposed and handed back as a view.
    """
    if not _use_onednn(grad_out, x):
        return grad_out.t().mm(x)
    if grad_out.shape[1] <= x.shape[1]:
        return _onednn_linear(grad_out.t(), x.t())
    return _onednn_linear(x.t(), grad_out.t()).t()


def accumulate_weight_gradient(total: Tensor, grad_out: Tensor, x: Tensor, alpha: float = 1.0) -> None:
    """total += alpha · grad_outᵀ · x, in place (torch's own kernel adds inside the product)."""
    if _use_onednn(grad_out, x):
        total.add_(weight_gradient(grad_out, x), alpha=alpha)
    else:
        total.addmm_(grad_out.t(), x, alpha=alpha)


def input_gradient(grad_out: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
    """grad_out · weight for (..., out) and (out, in): the gradient of a linear layer's input (into `out` if given)."""
    if not _use_onednn(grad_out, weight):
        return grad_out.matmul(weight) if out is None else torch.matmul(grad_out, weight, out=out)
    result = _onednn_linear(grad_out, weight.t())
    return result if out is None else out.copy_(result)


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = input_gradient(grad, weight) if need_x else None
        grad_w = weight_gradient(grad_rows, x.reshape(-1, x.shape[-1])) if need_w else None
        grad_b = grad_rows.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


class _Frozen(threading.local):
    packed: dict[int, tuple[Tensor, Tensor]] | None = None  # id(weight) -> (weight, its packed copy)
    depth = 0


_frozen = _Frozen()  # per thread: two threads may generate at once


@contextlib.contextmanager
def frozen_weights() -> Iterator[None]:
    """Within this block, `linear` reorders each weight into oneDNN's blocked layout once and reuses it.

    A product on a plain weight reorders it first, on every call. In decoding (a few rows per
    weight, every weight at every step) that copy is a large share of the products' time
    (docs/benchmarks.md, "Packed weights"). The generation loops run inside this block; the weights must
    not change within it (in-place optimizer steps do not always bump a tensor's version, so
    the copies cannot safely outlive the block). Also a decorator. Nests.
    """
    if _frozen.packed is None:
        _frozen.packed = {}
    _frozen.depth += 1
    try:
        yield
    finally:
        _frozen.depth -= 1
        if _frozen.depth == 0:
            _frozen.packed = None


def _packed_weight(weight: Tensor) -> Tensor:
    packed = _frozen.packed
    if packed is None:
        return weight
    entry = packed.get(id(weight))
    if entry is None or entry[0] is not weight:
        entry = (weight, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64))
        packed[id(weight)] = entry
    return entry[1]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`, multiplied by oneDNN where that is this CPU's fast fp32 GEMM."""
    if x.dim() == 0 or not _use_onednn(x, weight, bias) or _small_product(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _OneDnnLinear.apply(x, weight, bias)
    return _onednn_linear(x, _packed_weight(weight), bias)


def frozen_linear(weight: Tensor, bias: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """`linear` on fixed weights as a function, for the decoding steps of a `frozen_weights` block.

    Where oneDNN multiplies, the weight is packed here, once, and a call goes straight to the op:
    a one-row product takes about 30 µs, and the checks `linear` repeats on every call (the
    backend, each tensor's type, autocast, tracing) took about 10 µs more (docs/benchmarks.md,
    "Decoding steps"). Those checks are made here instead, and a call only checks what can change
    between steps: rows of another type, grad enabled or autocast on take `linear`'s own path
    (a broadcast operand is made contiguous by `_onednn_linear`, as on that path).
    Elsewhere, or outside `frozen_weights`, it is `linear` itself. The packed copy lives as long
    as the function, so the weights must not change while it is in use.
    """
    general = functools.partial(linear, weight=weight, bias=bias)
    if _frozen.packed is None or not _use_onednn(weight, bias):
        return general
    packed = _packed_weight(weight)
    small = small_weight(weight) and _auto()  # `_small_product`, less what changes per call

    def project(x: Tensor) -> Tensor:
        if x.dtype is not torch.float32 or torch.is_grad_enabled() or torch.is_autocast_enabled("cpu"):
            return general(x)
        if small and few_rows(x):
            return F.linear(x, weight, bias)
        return _onednn_linear(x, packed, bias)

    return project


class Linear(nn.Linear):
    """`nn.Linear` (same arguments, parameters and state dict) on `linear`'s GEMM."""

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)

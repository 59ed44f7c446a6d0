"""Where training runs and in which precision: the device rule and the autocast dtype."""

from __future__ import annotations

import torch

from nanoformer.errors import UserError


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; under torchrun, GPU number LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train config 'device': 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("train config 'device': 'mps' was asked for but this machine has no MPS; use 'auto' or 'cpu'")
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the config's `dtype` on `device` (None = plain fp32)."""
    if dtype == "fp32":
        return None
    if dtype == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("train config 'dtype': this GPU has no bf16; use 'fp16' or 'fp32'")
        return torch.bfloat16
    if device.type != "cuda":
        raise UserError(
            f"train config 'dtype': 'fp16' needs a CUDA GPU (for its loss scaling) but training runs "
            f"on {device.type}; use 'bf16' or 'fp32'"
        )
    return torch.float16

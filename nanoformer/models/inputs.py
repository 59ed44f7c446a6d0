"""Checks and defaults for the tensors users hand to a model.

A wrong input should fail here, with a message naming the argument, what was given and what is
expected, rather than as an opaque index error from deep inside torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nanoformer.layers.masks import check_attention_mask


def check_ids(name: str, ids: Tensor, vocab_size: int) -> None:
    """ids must be a (batch, length) integer tensor of token ids in [0, vocab_size)."""
    if not isinstance(ids, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids with shape (batch, length), got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got shape {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} holds token ids in [{int(ids.min())}, {int(ids.max())}], outside the vocabulary [0, {vocab_size})"
        )


def check_length(name: str, length: int, offset: int, max_positions: int) -> None:
    if offset + length > max_positions:
        where = f" after {offset} cached positions" if offset else ""
        raise ValueError(
            f"{name} has {length} positions{where}, more than max_positions = {max_positions}; "
            f"truncate the input or use a model with more positions"
        )


def check_mask(name: str, mask: Tensor | None, ids: Tensor, length: int | None = None) -> None:
    check_attention_mask(name, mask, ids.shape[0], ids.shape[1] if length is None else length)


def check_same_shape(name: str, tensor: Tensor | None, ids: Tensor) -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(ids.shape):
        raise ValueError(f"{name} must have the shape of the input ids {tuple(ids.shape)}, got {tuple(tensor.shape)}")


def default_position_ids(length: int, offset: int, attention_mask: Tensor | None, device: torch.device) -> Tensor:
    """Positions of `length` new tokens after `offset` cached ones.

    With a padding mask over all tokens so far, positions count real tokens only, so a
    left-padded prompt gets the same positions as the prompt alone: (1, T) or (B, T).
    """
    if attention_mask is None:
        return torch.arange(offset, offset + length, device=device).unsqueeze(0)
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.clamp(min=0)[:, -length:]

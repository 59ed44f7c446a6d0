"""Grouped-query attention for beam search: the beams of a sentence read one copy of its memory.

Beam search keeps the cross-attention keys/values once per source sentence, not once per beam:
the g beams of a sentence read the same encoder memory, so a step reads g times less of it. The
g query rows of a sentence become g·T queries of one attention call over that sentence's keys;
each query is attended independently, so the outputs equal those of g identical copies.
"""

from __future__ import annotations

from torch import Tensor


def group_queries(q: Tensor, kv_rows: int) -> Tensor:
    """Queries (R, H, T, d) whose R / kv_rows consecutive rows share one row of keys/values, as
    (kv_rows, H, g·T, d)."""
    rows, heads, length, d = q.shape
    if rows % kv_rows:
        raise ValueError(f"{rows} query rows cannot share {kv_rows} rows of keys/values")
    g = rows // kv_rows
    return q.view(kv_rows, g, heads, length, d).transpose(1, 2).reshape(kv_rows, heads, g * length, d)


def ungroup_queries(x: Tensor, rows: int) -> Tensor:
    """Undo `group_queries` on an output or weights (kv_rows, H, g·T, x) -> (rows, H, T, x)."""
    kv_rows, heads, grouped, width = x.shape
    g = rows // kv_rows
    return x.view(kv_rows, heads, g, grouped // g, width).transpose(1, 2).reshape(rows, heads, grouped // g, width)

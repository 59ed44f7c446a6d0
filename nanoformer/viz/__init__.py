"""Look inside a model: attention maps, positional encodings and training curves.

- `attention`: gather every layer's and head's attention weights through the explicit ("math")
  attention path, for all three families, with the tokens they belong to;
- `heatmaps`: PNG heatmaps of those weights (a layers × heads grid, single maps, the source ×
  target alignment of a translation);
- `html`: one self-contained, offline HTML page with a head view and a model view;
- `positions`: the sinusoidal table and RoPE's rotations as pictures;
- `metrics`: training curves from a run's `metrics.jsonl`;
- `fonts`: a font that has Korean glyphs, so Hangul labels render.

Only `attention` and `html` work without matplotlib; the plotting modules import it lazily and
say how to install it (`pip install 'nanoformer[viz]'`) when it is missing.
"""

from nanoformer.viz.attention import (
    AttentionMap,
    AttentionResult,
    extract_attention,
    save_attention,
)
from nanoformer.viz.html import render_html

__all__ = ["AttentionMap", "AttentionResult", "extract_attention", "save_attention", "render_html"]

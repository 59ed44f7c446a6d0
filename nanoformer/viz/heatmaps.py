"""Attention weights as PNG heatmaps: a layers × heads grid, single maps, and the alignment.

Rows are queries (the tokens that look), columns are keys (the tokens looked at); each row sums to
1. Colours share one scale per figure, from 0 to the figure's largest weight, shown by the
colour bar, and small maps print each weight in its cell, like the note's 나는 = 0.1,
학교에 = 0.3, 간다 = 0.6. Layers and heads are numbered from 1.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from nanoformer.viz.attention import AttentionMap, AttentionResult, alignment
from nanoformer.viz.plotting import label_font, pyplot, save

CMAP = "viridis"
LABEL_LIMIT = 24  # grids label their axes up to this many tokens
ANNOTATE_LIMIT = 12  # single maps print the weights up to this many tokens


SHORT_LABEL = 4  # characters: "학교에", "school" fit under their column upright


def _label_inches(label: str, fontsize: float) -> float:
    """A label's printed width, roughly: a Hangul or CJK character is about 1 em, others about 0.6."""
    ems = sum(1.0 if ord(ch) >= 0x1100 else 0.6 for ch in label.strip()) + 0.4  # and a little space
    return ems * fontsize / 72


def label_rotation(labels: list[str], width_in: float | None = None, fontsize: float = 10) -> int:
    """Degrees to turn the column labels: none when every label is short and all fit the axis'
    width (a reader reads 나 / 는 / 학교에 / 간다 upright), else 45; never 90, which turns Hangul
    into sideways glyphs."""
    short = max((len(label.strip()) for label in labels), default=0) <= SHORT_LABEL
    fits = width_in is None or max((_label_inches(label, fontsize) for label in labels), default=0) * len(labels) <= width_in
    return 0 if short and fits else 45


def _column_labels(ax, cols: list[str], fontsize: float) -> None:
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    rotation = label_rotation(cols, width_in, fontsize)
    ax.set_xticks(range(len(cols)), cols, fontsize=fontsize, rotation=rotation,
                  ha="right" if rotation else "center", rotation_mode="anchor")


def _ticks(ax, rows: list[str], cols: list[str], fontsize: float) -> None:
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    _column_labels(ax, cols, fontsize)


def plot_grid(m: AttentionMap, path: str | Path, title: str | None = None) -> Path:
    """All layers (rows) × heads (columns) of one kind of attention in one figure."""
    plt = pyplot()
    w = m.weights
    n_layers, n_heads, n_q, n_k = w.shape
    cell = max(1.4, min(2.6, 14 / max(n_heads, 1)))
    labelled = max(n_q, n_k) <= LABEL_LIMIT
    with label_font(m.query_tokens + m.key_tokens):
        fig, axes = plt.subplots(n_layers, n_heads, figsize=(cell * n_heads + 1.5, cell * n_layers + 1.0),
                                 squeeze=False)
        vmax = float(w.max())
        image = None
        for layer in range(n_layers):
            for head in range(n_heads):
                ax = axes[layer][head]
                image = ax.imshow(w[layer, head].numpy(), cmap=CMAP, vmin=0.0, vmax=vmax, aspect="auto")
                ax.set_xticks([])
                ax.set_yticks([])
                if layer == 0:
                    ax.set_title(f"head {head + 1}", fontsize=9)
                if head == 0:
                    ax.set_ylabel(f"layer {layer + 1}", fontsize=9)
                    if labelled:
                        ax.set_yticks(range(n_q), m.query_tokens, fontsize=6)
                if layer == n_layers - 1 and labelled:
                    _column_labels(ax, m.key_tokens, fontsize=6)
        fig.suptitle(title or f"{m.title}: {n_layers} layers × {n_heads} heads (rows: queries, columns: keys)",
                     fontsize=10)
        fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
        return save(fig, path)


def plot_matrix(weights: Tensor, rows: list[str], cols: list[str], path: str | Path, title: str,
                ylabel: str = "query", xlabel: str = "key") -> Path:
    """One (rows × cols) map with token labels, the weights printed in small maps."""
    plt = pyplot()
    n_q, n_k = weights.shape
    with label_font(rows + cols):
        side_w = min(14.0, max(4.0, 0.45 * n_k + 2.5))
        side_h = min(14.0, max(3.0, 0.45 * n_q + 1.5))
        fig, ax = plt.subplots(figsize=(side_w, side_h))
        image = ax.imshow(weights.numpy(), cmap=CMAP, vmin=0.0, vmax=max(float(weights.max()), 1e-9), aspect="auto")
        fontsize = 10 if max(n_q, n_k) <= 16 else (7 if max(n_q, n_k) <= 40 else 5)
        _ticks(ax, rows, cols, fontsize)
        if max(n_q, n_k) <= ANNOTATE_LIMIT:
            top = float(weights.max())
            for i in range(n_q):
                for j in range(n_k):
                    value = float(weights[i, j])
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if value > 0.6 * top else "white")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
        return save(fig, path)


def plot_single(m: AttentionMap, layer: int, head: int | None, path: str | Path) -> Path:
    """One layer's map for one head (0-based), or the mean over its heads when head is None."""
    w = m.weights[layer, head] if head is not None else m.weights[layer].mean(dim=0)
    which = f"head {head + 1}" if head is not None else f"mean of {m.n_heads} heads"
    return plot_matrix(w, m.query_tokens, m.key_tokens, path, f"{m.title}, layer {layer + 1}, {which}")


def plot_alignment(result: AttentionResult, path: str | Path, layer: int = -1) -> Path:
    """The translation's source × target alignment: cross-attention of one layer, mean over heads."""
    cross = result.get("cross")
    index = layer % cross.n_layers
    return plot_matrix(
        alignment(result, layer), cross.query_tokens, cross.key_tokens, path,
        f"cross-attention alignment (layer {index + 1}, mean of {cross.n_heads} heads)",
        ylabel="target: decoder input (query)", xlabel="source (key)",
    )


def write_attention_pngs(result: AttentionResult, out_dir: str | Path, layer: int | None = None,
                         head: int | None = None) -> list[Path]:
    """Every PNG of the attention command. layer/head (0-based) restrict the single maps.

    Per kind: `{kind}_grid.png` and `{kind}_layer{L}.png` (mean over heads) or
    `{kind}_layer{L}_head{H}.png`; for translation also `alignment.png`.
    """
    out_dir = Path(out_dir)
    written = []
    for m in result.maps:
        written.append(plot_grid(m, out_dir / f"{m.kind}_grid.png"))
        layers = [layer] if layer is not None else range(m.n_layers)
        for index in layers:
            name = f"{m.kind}_layer{index + 1}" + (f"_head{head + 1}" if head is not None else "")
            written.append(plot_single(m, index, head, out_dir / f"{name}.png"))
    if result.arch == "encoder-decoder":
        written.append(plot_alignment(result, out_dir / "alignment.png"))
    return written

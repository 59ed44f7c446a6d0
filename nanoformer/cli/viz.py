"""Look-inside commands: attention maps, positional-encoding plots, training curves."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from nanoformer.cli.common import DEVICES, load_checkpoint
from nanoformer.errors import UserError

SOURCE_TOKENIZER_FILE = "source_tokenizer.json"  # as the translation recipe saves it


def ensure_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create the folder if needed and prove a file can be written in it, or raise a UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to {path} ({error.strerror or error}); choose a writable {option} folder") from None
    return path


def _note(command: str, message: str) -> None:
    print(f"nanoformer {command}: note: {message}", file=sys.stderr)


def _check_index(value: int | None, count: int, what: str) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= count:
        raise UserError(f"--{what} {value}: the model has {what}s 1 to {count}; pick one of those")
    return value - 1


def _source_tokenizer(checkpoint: str, model):
    """A translation checkpoint with separate vocabularies keeps the source's in source_tokenizer.json."""
    if model.config.arch != "encoder-decoder":
        return None
    from nanoformer.api import resolve_checkpoint
    from nanoformer.tokenizer import Tokenizer

    path = resolve_checkpoint(checkpoint) / SOURCE_TOKENIZER_FILE
    return Tokenizer.load(path) if path.is_file() else None


ATTENTION_MAX_NEW_TOKENS = 32


def cmd_attention(args: argparse.Namespace) -> None:
    from nanoformer.viz.attention import extract_attention, save_attention
    from nanoformer.viz.fonts import find_korean_font, has_hangul, no_font_message
    from nanoformer.viz.html import write_html

    out = ensure_writable_dir(args.out)
    if not args.text.strip():
        raise UserError("--text is empty; give the text whose attention to show")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: give at least 1")
    if args.no_png and (args.layer is not None or args.head is not None):
        raise UserError("--layer and --head choose the PNG maps, and --no-png writes none; drop one of them "
                        "(the HTML viewer shows every layer and head)")
    if args.max_new_tokens is not None and args.target is not None:
        raise UserError("--max-new-tokens limits the model's own translation, but --target gives the target; drop one")
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    if args.max_new_tokens is not None and model.config.arch != "encoder-decoder":
        raise UserError(f"--max-new-tokens limits a translator's own translation; {args.checkpoint} is a "
                        f"{model.config.arch!r} model, whose attention is read on --text alone: drop it")
    max_new_tokens = ATTENTION_MAX_NEW_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    result = extract_attention(model, tokenizer, args.text, target=args.target, max_new_tokens=max_new_tokens,
                               source_tokenizer=_source_tokenizer(args.checkpoint, model))
    for message in result.notes:
        _note("attention", message)
    first = result.maps[0]
    layer = _check_index(args.layer, min(m.n_layers for m in result.maps), "layer")
    head = _check_index(args.head, first.n_heads, "head")
    written = list(save_attention(result, out))
    written.append(write_html(result, out, title=f"nanoformer attention: {Path(args.checkpoint).resolve().name}"))
    if not args.no_png:
        from nanoformer.viz.heatmaps import write_attention_pngs

        if has_hangul(result.labels()) and find_korean_font() is None:
            _note("attention", no_font_message())
        written += write_attention_pngs(result, out, layer=layer, head=head)
    if result.target is not None:
        how = "greedy translation" if result.target_generated else "target"
        print(f"{how}: {result.target}")
    print(f"wrote {len(written)} files to {out} (open {out / 'attention.html'} in a browser)")


def cmd_plot_positions(args: argparse.Namespace) -> None:
    from nanoformer.viz.positions import plot_positions

    path = plot_positions(args.kind, args.d_model, args.length, args.out)
    print(f"wrote {path}")


def cmd_plot_metrics(args: argparse.Namespace) -> None:
    from nanoformer.viz.metrics import metrics_path, plot_metrics

    source = metrics_path(args.run_dir)
    out = Path(args.out) if args.out else source.parent / "metrics.png"
    path = plot_metrics(args.run_dir, out, title=Path(os.path.abspath(args.run_dir)).name)
    print(f"wrote {path}")


def args_attention(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("--text", required=True, help="the text to read (the source sentence for translation)")
    parser.add_argument("--target", default=None,
                     help="translation only: the target sentence (default: the model's own greedy translation)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help=f"translation: length limit of the greedy translation ({ATTENTION_MAX_NEW_TOKENS})")
    parser.add_argument("--layer", type=int, default=None, help="single maps for this layer only (1-based)")
    parser.add_argument("--head", type=int, default=None,
                     help="single maps for this head (1-based) instead of the mean over heads")
    parser.add_argument("--no-png", action="store_true", help="only the HTML viewer and the weights")
    parser.add_argument("--device", default="cpu", choices=DEVICES)


def args_plot_positions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default="sinusoidal", choices=["sinusoidal", "rope"])
    parser.add_argument("--d-model", type=int, default=128, help="dimensions (for RoPE: of one head)")
    parser.add_argument("--length", type=int, default=100, help="number of positions")
    parser.add_argument("--out", required=True, help="output image (.png, .svg or .pdf)")


def args_plot_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder (with metrics.jsonl), or the metrics.jsonl file")
    parser.add_argument("--out", default=None, help="output image (default: RUN_DIR/metrics.png)")

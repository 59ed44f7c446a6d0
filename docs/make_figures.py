#!/usr/bin/env python
"""Regenerate every figure of docs/tour.md (what `make figures` runs).

Nothing is drawn by hand: each figure comes from the library, most from small models trained here
by the repository's own configs and recipes (`nanoformer train CONFIG --set ...`) on the standard
corpora, for a few minutes each:

  positional encodings   nanoformer plot-positions (sinusoidal, RoPE)
  scaled dot-product     layers.attention.scaled_dot_product_attention, with and without 1/√d_k
  FFN                    layers.feedforward.activation_fn (ReLU, GELU)
  GPT                    configs/shakespeare_char.toml → attention grid and map, training curves,
                         and the residual stream of the trained model (residual + LayerNorm)
  translation            configs/ko_en.toml (the note's 나는 학교에 간다 → I go to school), or
                         configs/multi30k_de_en.toml when there is no Korean config
                         → cross-attention alignment, cross-attention grid, interactive page
  BERT                   configs/bert_mlm_ko.toml (or bert_mlm_en.toml) → self-attention grid

    python docs/make_figures.py                 # a few minutes per family on a 2-core CPU
    python docs/make_figures.py --minutes 30    # longer training, clearer pictures
    python docs/make_figures.py --quick --out /tmp/f --runs /tmp/r   # tiny models, ~20 s (tests)

At the end every figure that docs/tour.md shows must have been written, or the script fails, and
`provenance.json` beside them records the SHA-256 of each figure and of the files that decide what
is drawn (this script, nanoformer/viz/, the configs it trains): tests/test_viz_docs.py checks that
the committed figures are the ones these committed files produced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tomllib
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.md"
sys.path.insert(0, str(ROOT))

if "NANOFORMER_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["NANOFORMER_DATA"] = str(ROOT.parent / "shared" / "data")  # as the Makefile does


@dataclass
class Example:
    config: str  # file name under configs/
    text: str
    target: str | None = None


@dataclass
class Family:
    name: str
    examples: list[Example]
    share: float  # of the time budget
    quick: list[str] = field(default_factory=list)  # --set overrides for --quick


TINY_MODEL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.d_ff=64"]
QUICK_TRAIN = ["train.max_steps=3", "train.eval_interval=3", "train.eval_batches=1", "train.log_interval=1",
               "train.warmup_steps=1", 'train.max_time="5m"', 'train.device="cpu"']

FAMILIES = {
    "gpt": Family(
        "gpt",
        [Example("shakespeare_char.toml", "To be, or not to be")],
        share=0.3,
        quick=TINY_MODEL + QUICK_TRAIN + ["model.size=fixed", "model.max_positions=32", "data.block_size=32",
                                          "train.batch_size=4"],
    ),
    "translation": Family(
        "translation",
        [Example("ko_en.toml", "나는 학교에 간다", "I go to school."),
         Example("multi30k_de_en.toml", "Ein Mann fährt Fahrrad auf einer Straße.", "A man rides a bike on a street.")],
        share=0.45,
        quick=TINY_MODEL + QUICK_TRAIN + ["data.max_tokens=512"],
    ),
    "bert": Family(
        "bert",
        [Example("bert_mlm_ko.toml", "나는 학교에 갔다. 그리고 친구를 만났다."),
         Example("bert_mlm_en.toml", "The cat sat on the mat because it was tired.")],
        share=0.25,
        quick=TINY_MODEL + QUICK_TRAIN + ["model.size=fixed", 'data.path="ko-text/korquad_v1/KorQuAD_v1.0_dev.json"',
                                          "data.vocab_size=1000",
                                          "data.max_length=32", "model.max_positions=32", "train.batch_size=4"],
    ),
}


def cli(*args: str) -> None:
    from nanoformer.cli import main

    args = [str(a) for a in args]
    print("$ nanoformer " + " ".join(a if " " not in a else repr(a) for a in args), flush=True)
    code = main(args)
    if code != 0:
        raise SystemExit(f"make_figures: `nanoformer {args[0]}` failed (exit code {code})")


def choose_example(family: Family) -> tuple[Path, Example]:
    """The first of the family's configs that the repository ships."""
    for example in family.examples:
        path = ROOT / "configs" / example.config
        if path.is_file():
            return path, example
    names = " or ".join(f"configs/{e.config}" for e in family.examples)
    raise SystemExit(f"make_figures: no config for {family.name}: expected {names}")


def sized_for_budget(config: Path) -> bool:
    """Whether the config says [model] size = "auto" (the budget rule then chooses steps and warm-up)."""
    with config.open("rb") as f:
        return tomllib.load(f).get("model", {}).get("size") == "auto"


def train_family(family: Family, runs: Path, minutes: float, quick: bool) -> tuple[Path, Example]:
    config, example = choose_example(family)
    run_dir = runs / family.name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run, so the figures match the config
    overrides = list(family.quick) if quick else [
        f'train.max_time="{max(0.5, minutes * family.share):.2f}m"',
        "train.eval_interval=50", "train.eval_batches=5", "train.keep_last=0",
    ]
    if not quick and not sized_for_budget(config):  # a size = "auto" config sets its own steps
        overrides += ["train.max_steps=1000000",
                      "train.warmup_steps=100"]  # the configs' warm-ups are sized for hour-long runs
    start = time.time()
    cli("train", config, "--out", run_dir, "--quiet", *[a for o in overrides for a in ("--set", o)])
    print(f"make_figures: {family.name} trained in {time.time() - start:.0f} s", flush=True)
    return run_dir, example


def copy(src: Path, dest: Path, written: list[Path]) -> None:
    shutil.copyfile(src, dest)
    written.append(dest)


def attention_figures(name: str, run_dir: Path, example: Example, out: Path, written: list[Path]) -> None:
    att = run_dir / "attention"
    args = ["attention", run_dir, "--text", example.text, "--out", att]
    if example.target:
        args += ["--target", example.target]
    cli(*args)
    if name == "gpt":
        copy(att / "decoder_self_grid.png", out / "gpt_attention_grid.png", written)
        last = max(int(m.group(1)) for p in att.glob("decoder_self_layer*.png")
                   if (m := re.fullmatch(r"decoder_self_layer(\d+)\.png", p.name)))
        copy(att / f"decoder_self_layer{last}.png", out / "gpt_attention_last_layer.png", written)
    elif name == "translation":
        copy(att / "alignment.png", out / "translation_alignment.png", written)
        copy(att / "cross_grid.png", out / "translation_cross_grid.png", written)
        copy(att / "encoder_self_grid.png", out / "translation_encoder_grid.png", written)
        copy(att / "attention.html", out / "translation_attention.html", written)
        cli("attention", run_dir, "--text", example.text, "--out", run_dir / "attention_greedy", "--no-png")
    else:
        copy(att / "encoder_self_grid.png", out / "bert_attention_grid.png", written)


def scaled_dot_product_figure(path: Path) -> Path:
    """One query's weights over 12 keys, with the paper's 1/√d_k and without it, for d_k = 64 and 512."""
    import torch

    from nanoformer.layers.attention import scaled_dot_product_attention
    from nanoformer.viz.plotting import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    generator = torch.Generator().manual_seed(0)
    for ax, d_k in zip(axes, (64, 512)):
        q = torch.randn(1, 1, 1, d_k, generator=generator)
        k = torch.randn(1, 1, 12, d_k, generator=generator)
        v = torch.zeros(1, 1, 12, d_k)
        _, scaled = scaled_dot_product_attention(q, k, v, need_weights=True, impl="math")
        _, raw = scaled_dot_product_attention(q, k, v, need_weights=True, impl="math", scale=1.0)
        x = torch.arange(12)
        ax.bar(x - 0.2, scaled[0, 0, 0].numpy(), width=0.4, label="softmax(q·k / √d_k)")
        ax.bar(x + 0.2, raw[0, 0, 0].numpy(), width=0.4, label="softmax(q·k), unscaled")
        ax.set_xticks(x)
        ax.set_xlabel("key")
        ax.set_title(f"d_k = {d_k}")
    axes[0].set_ylabel("attention weight")
    axes[0].legend(fontsize=8)
    fig.suptitle("Scaling keeps the softmax from collapsing onto one key as d_k grows (random q, k)")
    fig.tight_layout()
    return save(fig, path)


def ffn_figure(path: Path) -> Path:
    import torch

    from nanoformer.layers.feedforward import activation_fn
    from nanoformer.viz.plotting import pyplot, save

    plt = pyplot()
    x = torch.linspace(-4, 4, 400)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in ("relu", "gelu"):
        ax.plot(x.numpy(), activation_fn(name)(x).numpy(), label=name)
    ax.axhline(0, color="#999", lw=0.5)
    ax.set_xlabel("x")
    ax.set_ylabel("activation(x)")
    ax.set_title("FFN(x) = W₂ · activation(W₁x + b₁) + b₂, at every position alike")
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def residual_figure(run_dir: Path, text: str, path: Path) -> Path:
    """The trained GPT's residual stream across layers, and what LayerNorm hands each sublayer."""
    import torch

    import nanoformer
    from nanoformer.viz.plotting import pyplot, save

    model, tok = nanoformer.load(run_dir)
    stream, normed = [], []
    hooks = []
    for layer in model.decoder.layers:
        hooks.append(layer.register_forward_pre_hook(lambda m, args: stream.append(args[0])))
        hooks.append(layer.self_attn_norm.register_forward_hook(lambda m, args, out: normed.append(out)))
    with torch.no_grad():
        final = model.run(torch.tensor([tok.encode(text)])).hidden
    for hook in hooks:
        hook.remove()

    def rms(x):
        return float(x.pow(2).mean().sqrt())

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    layers = list(range(1, len(stream) + 1))
    ax.plot(layers, [rms(x) for x in stream], "o-", label="residual stream x entering the layer")
    ax.plot(layers, [rms(x) for x in normed], "s-", label="LayerNorm(x): the attention sublayer's input")
    ax.axhline(rms(final), ls="--", color="#888", label="after the final LayerNorm")
    ax.set_xlabel("layer")
    ax.set_ylabel("RMS over positions and dimensions")
    ax.set_xticks(layers)
    ax.set_title(f"Trained GPT ({model.config.norm_position}-LN): x + Sublayer(LN(x))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


PROVENANCE = "provenance.json"


def figure_inputs() -> list[Path]:
    """The files that decide what a figure shows: this driver, the drawing code, the configs it trains.

    (The model code decides the weights the figures show too; holding every commit to a 15-minute
    regeneration for it would be too much, so it is left out, and said so here.)"""
    configs = [ROOT / "configs" / e.config for f in FAMILIES.values() for e in f.examples]
    return [Path(__file__).resolve(), *sorted((ROOT / "nanoformer" / "viz").rglob("*.py")),
            *sorted(path for path in configs if path.is_file())]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_digest() -> dict[str, str]:
    """Repository path -> SHA-256 of each figure input."""
    return {str(path.relative_to(ROOT)): sha256(path) for path in figure_inputs()}


def write_provenance(out: Path, written: list[Path], minutes: float, quick: bool) -> Path:
    from nanoformer.kernels.cpu import cpu_field

    record = {
        "command": "python docs/make_figures.py" + (" --quick" if quick else f" --minutes {minutes:g}"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_field("model name") or platform.processor(),
        "cpu_family_model": f"{cpu_field('cpu family')}/{cpu_field('model')}",
        "inputs": inputs_digest(),
        "figures": {path.name: sha256(path) for path in sorted(written, key=lambda p: p.name)},
    }
    path = out / PROVENANCE
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def tour_figures() -> set[str]:
    """The figure files docs/tour.md shows or links."""
    if not TOUR.is_file():
        return set()
    return set(re.findall(r"figures/([\w.-]+\.(?:png|html))", TOUR.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="where the figures go")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "figures", help="where the training runs go")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget for the three families together")
    parser.add_argument("--quick", action="store_true", help="tiny models, a few steps (for tests)")
    parser.add_argument("--only", choices=sorted(FAMILIES), action="append", help="train only these families")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    written: list[Path] = []

    cli("plot-positions", "--kind", "sinusoidal", "--d-model", "128", "--length", "100",
        "--out", args.out / "positions_sinusoidal.png")
    written.append(args.out / "positions_sinusoidal.png")
    cli("plot-positions", "--kind", "rope", "--d-model", "64", "--length", "100", "--out", args.out / "positions_rope.png")
    written.append(args.out / "positions_rope.png")
    written.append(scaled_dot_product_figure(args.out / "scaled_dot_product.png"))
    written.append(ffn_figure(args.out / "ffn_activations.png"))

    for name in args.only or list(FAMILIES):
        run_dir, example = train_family(FAMILIES[name], args.runs, args.minutes, args.quick)
        attention_figures(name, run_dir, example, args.out, written)
        if name == "gpt":
            cli("plot-metrics", run_dir, "--out", args.out / "gpt_metrics.png")
            written.append(args.out / "gpt_metrics.png")
            written.append(residual_figure(run_dir, example.text, args.out / "residual_layernorm.png"))

    names = {p.name for p in written}
    missing = sorted(tour_figures() - names) if not args.only else []
    for path in written:
        print(f"  {path}  ({path.stat().st_size / 1024:.0f} KB)")
    print(f"make_figures: {len(written)} files in {time.time() - start:.0f} s")
    if missing:
        print(f"make_figures: error: docs/tour.md shows figures this script did not write: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    if not args.only:
        print(f"  {write_provenance(args.out, written, args.minutes, args.quick)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

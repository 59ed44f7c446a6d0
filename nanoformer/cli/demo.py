"""`nanoformer demo`: the study note end to end, in about a quarter of an hour on a 2-core CPU.

It trains the small configs of the three families on the real corpora for a few minutes each,
then shows what each learned (a GPT sample, translations including the note's sentence, a
fill-mask), and writes the note's pictures: attention maps (with the cross-attention alignment of
"나는 학교에 간다") and positional encodings. Every step is an ordinary `nanoformer` command, printed
before it runs, so the demo doubles as a tour of the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import shlex
import time
from pathlib import Path

from nanoformer.errors import UserError

NOTE_SENTENCE = "나는 학교에 간다"
WORD_ORDER_SENTENCE = "학교에 나는 간다"  # the note's word-order example: the same meaning
Cli = Callable[[list[str]], int]  # nanoformer.cli.main, handed over by the parser (which imports this module)


def _run(cli: Cli, argv: list[str]) -> None:
    print(f"\n$ nanoformer {shlex.join(argv)}", flush=True)
    code = cli(argv)
    if code != 0:
        raise UserError(f"demo step `nanoformer {argv[0]}` failed (exit code {code}); see the message above")


def _train(cli: Cli, config: Path, out: Path, minutes: float) -> None:
    """Train a repository config for a few minutes (each config sizes its warm-up for that)."""
    _run(cli, ["train", str(config), "--out", str(out), "--set", f'train.max_time="{minutes}m"'])


def cmd_demo(args: argparse.Namespace) -> None:
    cli: Cli = args.cli  # each step runs as `nanoformer ...` would, through the command line's own entry point
    configs = Path(args.configs)
    for name in ("shakespeare_char.toml", "ko_en_demo.toml", "bert_mlm_ko.toml"):
        if not (configs / name).is_file():
            raise UserError(f"{configs / name}: config not found; run the demo from the repository root or pass --configs")
    root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    gpt, translation, bert, pictures = root / "gpt", root / "ko-en", root / "bert", root / "pictures"
    start = time.perf_counter()

    print(f"== 1/4 GPT (decoder only, next-token prediction): Tiny Shakespeare, {args.gpt_minutes} minutes")
    _train(cli, configs / "shakespeare_char.toml", gpt, args.gpt_minutes)
    _run(cli, ["generate", str(gpt), "--prompt", "ROMEO:", "--max-new-tokens", "200", "--top-k", "40", "--seed", "0"])

    print(f"\n== 2/4 Translation (encoder-decoder with cross-attention): Korean→English, {args.translation_minutes} minutes")
    print("   The corpus is small (about 7k sentence pairs), so expect rough translations.")
    _train(cli, configs / "ko_en_demo.toml", translation, args.translation_minutes)  # shaped for minutes
    _run(cli, ["translate", str(translation), NOTE_SENTENCE, WORD_ORDER_SENTENCE, "나는 책을 읽는다",
               "--beam-size", "4", "--max-len-a", "2", "--max-len-b", "5"])

    print(f"\n== 3/4 BERT (encoder only, masked-language modelling): Korean text, {args.bert_minutes} minutes")
    _train(cli, configs / "bert_mlm_ko.toml", bert, args.bert_minutes)  # size = "auto" sizes the warm-up too
    _run(cli, ["fill-mask", str(bert), "나는 [MASK]에 갔다", "--top-k", "5"])

    print("\n== 4/4 Look inside: attention weights and positional encodings")
    _run(cli, ["attention", str(translation), "--text", NOTE_SENTENCE, "--out", str(pictures / "translation-attention")])
    _run(cli, ["attention", str(bert), "--text", "나는 [MASK]에 갔다", "--out", str(pictures / "bert-attention")])
    _run(cli, ["attention", str(gpt), "--text", "ROMEO: But soft", "--out", str(pictures / "gpt-attention")])
    _run(cli, ["plot-positions", "--kind", "sinusoidal", "--d-model", "128", "--length", "100",
          "--out", str(pictures / "positions-sinusoidal.png")])
    _run(cli, ["plot-positions", "--kind", "rope", "--d-model", "64", "--length", "100",
          "--out", str(pictures / "positions-rope.png")])
    for run_dir in (gpt, translation, bert):
        _run(cli, ["plot-metrics", str(run_dir), "--out", str(pictures / f"metrics-{run_dir.name}.png")])

    minutes = (time.perf_counter() - start) / 60
    print(f"\nDone in {minutes:.1f} minutes. Everything is under {root}:")
    print(f"  models:       {gpt}, {translation}, {bert}")
    print(f"  attention:    {pictures / 'translation-attention' / 'attention.html'} (open in a browser),")
    print(f"                {pictures / 'translation-attention' / 'alignment.png'} (source × target, the note's example)")
    print(f"  positions:    {pictures / 'positions-sinusoidal.png'}, {pictures / 'positions-rope.png'}")
    print(f"  training:     {pictures}/metrics-*.png")
    print("  next:         docs/tour.md maps each idea of the note to the code that implements it")
    print("\nTry them in a browser (the playground: generate, translate with its attention map, fill-mask):")
    print(f"  nanoformer serve {shlex.join([str(gpt), str(translation), str(bert)])}   # then open http://127.0.0.1:8000/")


def args_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default="configs", help="folder of the repository's configs")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--gpt-minutes", type=float, default=3.0)
    parser.add_argument("--translation-minutes", type=float, default=5.0)
    parser.add_argument("--bert-minutes", type=float, default=4.0)

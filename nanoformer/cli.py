"""The `nanoformer` command line.

Every mistake a user can fix ends as one line on stderr and exit code 2, without a traceback
(set NANOFORMER_DEBUG=1 to see it). Bugs keep their tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nanoformer.errors import UserError


def _load_config_for_info(target: str):
    """A ModelConfig from a preset name, a config JSON file, or a checkpoint/run folder."""
    from nanoformer.config import PRESETS, ModelConfig

    if target in PRESETS:
        return ModelConfig.from_preset(target)
    path = Path(target)
    if path.is_dir():
        from nanoformer.api import resolve_checkpoint

        path = resolve_checkpoint(path) / "config.json"
    if not path.exists():
        raise UserError(f"{target}: not a preset, config file or checkpoint; presets are: {', '.join(PRESETS)}")
    if path.suffix == ".toml":
        from nanoformer.run_config import load_run_config

        return load_run_config(path).model
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: invalid JSON ({error.msg}); fix the file") from None
    return ModelConfig.from_dict(data.get("model", data))


def cmd_info(args: argparse.Namespace) -> None:
    from nanoformer.models import build_model
    from nanoformer.summary import format_summary

    config = _load_config_for_info(args.target)
    print(format_summary(config, build_model(config), depth=args.depth))


def cmd_train(args: argparse.Namespace) -> None:
    from nanoformer.recipes import train
    from nanoformer.run_config import load_run_config

    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={json.dumps(args.device)}")
    run = load_run_config(args.config, overrides)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train(run, run_dir, resume=args.resume, progress=not args.quiet)
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    print(f"stopped by {result.stopped_by} at step {result.step}; best val loss {best}; run folder {run_dir}")
    if result.stopped_by == "interrupt":
        raise KeyboardInterrupt


def _load_checkpoint(path: str, device: str = "cpu"):
    import nanoformer

    model, tokenizer = nanoformer.load(path, device=_device(device))
    if tokenizer is None:
        raise UserError(f"{path}: the checkpoint has no tokenizer.json; text commands need one")
    return model, tokenizer


def _device(name: str) -> str:
    from nanoformer.training.trainer import select_device

    return str(select_device(name))


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from nanoformer.generation.text import generate_text

    model, tokenizer = _load_checkpoint(args.checkpoint, args.device)
    if model.config.arch != "decoder":
        raise UserError(f"{args.checkpoint}: generate needs a decoder (GPT) model, this one is {model.config.arch!r}")
    generator = torch.Generator(device=next(model.parameters()).device)
    generator.manual_seed(args.seed)
    sampling = dict(
        do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )
    for sample in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {sample + 1} ---")
        sys.stdout.write(args.prompt)
        sys.stdout.flush()

        def stream(row: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        generate_text(model, tokenizer, [args.prompt], args.max_new_tokens, stop=args.stop, on_text=stream,
                      generator=generator, **sampling)
        sys.stdout.write("\n")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from nanoformer.api import resolve_checkpoint
    from nanoformer.data.lm import LMData, build_token_cache, open_token_cache
    from nanoformer.data.text import resolve_text_files
    from nanoformer.evaluation.perplexity import evaluate_stream
    from nanoformer.training.checkpoint import read_config

    model, tokenizer = _load_checkpoint(args.checkpoint, args.device)
    if model.config.arch != "decoder":
        raise UserError(f"{args.checkpoint}: evaluate supports decoder (GPT) models so far, this one is {model.config.arch!r}")
    folder = resolve_checkpoint(args.checkpoint)
    data = read_config(folder).get("data", {})
    block_size = int(data.get("block_size", model.config.max_positions))
    cache_dir = Path(args.cache_dir) if args.cache_dir else folder.parent.parent / "data"
    if args.data:
        files = resolve_text_files(args.data)
        tokens = open_token_cache(build_token_cache(files, tokenizer, cache_dir))
        what = args.data
    else:
        source = data.get("name") or data.get("path")
        if not source:
            raise UserError(f"{folder}: the checkpoint does not say which data it was trained on; pass --data FILE")
        files = resolve_text_files(data.get("files") or source)
        stream = LMData(open_token_cache(build_token_cache(files, tokenizer, cache_dir)),
                        val_fraction=float(data.get("val_fraction", 0.1)))
        tokens = np.asarray(stream.splits["val"])
        what = f"{source} (validation split)"
    result = evaluate_stream(model, tokens, block_size, args.batch_size, args.max_tokens, progress=True)
    print(json.dumps({"data": what, "tokens": result.tokens, "loss": round(result.loss, 4),
                      "perplexity": round(result.perplexity, 3), "block_size": block_size}))


def cmd_demo(args: argparse.Namespace) -> None:
    """The README's main job: train a small GPT on Tiny Shakespeare, then show what it learned."""
    import time

    import torch

    import nanoformer
    from nanoformer.generation.text import generate_text
    from nanoformer.recipes import train
    from nanoformer.run_config import load_run_config

    run = load_run_config(args.config, [f'train.max_time="{args.minutes}m"'])
    run_dir = Path(args.out) / time.strftime("shakespeare-%Y%m%d-%H%M%S")
    print(f"== 1/2 GPT: training {Path(args.config).name} on Tiny Shakespeare for up to {args.minutes} minutes")
    print(f"   (the character-level model of the note's 'GPT: next token prediction'; run folder {run_dir})")
    result = train(run, run_dir, progress=True)
    print(f"   stopped by {result.stopped_by} at step {result.step}, best validation loss {result.best_val_loss:.3f}")
    model, tokenizer = nanoformer.load(run_dir)
    print("== 2/2 samples (temperature 0.8, top-k 40)")
    generator = torch.Generator().manual_seed(0)
    for prompt in ("ROMEO:", "First Citizen:\nWe are", "KING HENRY:"):
        text = generate_text(model, tokenizer, [prompt], 200, generator=generator, do_sample=True,
                             temperature=0.8, top_k=40)[0]
        print(f"--- {prompt!r}\n{prompt}{text}\n")
    print(f"Try: nanoformer generate {run_dir} --prompt 'JULIET:'   |   nanoformer evaluate {run_dir}")


def cmd_import_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import import_hf

    print(f"wrote {import_hf(args.source, args.out)}")


def cmd_export_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import export_hf

    print(f"wrote {export_hf(args.checkpoint, args.out)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoformer", description="The Transformer from first principles.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print a model's config and parameter table")
    info.add_argument("target", help="a preset name, a config .json/.toml, or a checkpoint / run folder")
    info.add_argument("--depth", type=int, default=3, help="module depth of the parameter table")
    info.set_defaults(handler=cmd_info)

    train = commands.add_parser("train", help="train a model from a TOML config")
    train.add_argument("config", help="a TOML file with [model], [data] and [train] sections (see configs/)")
    train.add_argument("--out", help="run folder (default: runs/CONFIG_NAME)")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="shorthand for --set train.device=...")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)

    gen = commands.add_parser("generate", help="continue a prompt with a GPT-style model, streaming to stdout")
    gen.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    gen.add_argument("--prompt", default="", help="text to continue (empty: start from scratch)")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--stop", action="append", help="stop when this string appears (repeatable)")
    gen.add_argument("--num-samples", type=int, default=1)
    gen.add_argument("--seed", type=int, default=1337)
    gen.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    gen.set_defaults(handler=cmd_generate)

    ev = commands.add_parser("evaluate", help="validation loss and perplexity of a language model")
    ev.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    ev.add_argument("--data", help="a standard set name, file or folder (default: the run's validation split)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens")
    ev.add_argument("--cache-dir", help="where token caches go (default: the run's data folder)")
    ev.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    ev.set_defaults(handler=cmd_evaluate)

    imp = commands.add_parser("import-hf", help="convert a Hugging Face GPT-2 / BERT / Marian model folder to a checkpoint")
    imp.add_argument("source", help="a folder written by save_pretrained (or a hub id, when online)")
    imp.add_argument("out", help="the checkpoint folder to write")
    imp.set_defaults(handler=cmd_import_hf)

    exp = commands.add_parser("export-hf", help="write a checkpoint as a Hugging Face model folder")
    exp.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    exp.add_argument("out", help="the folder to write (save_pretrained layout)")
    exp.set_defaults(handler=cmd_export_hf)

    demo = commands.add_parser("demo", help="train a small GPT on Tiny Shakespeare for a few minutes and sample it")
    demo.add_argument("--config", default="configs/shakespeare_char.toml")
    demo.add_argument("--minutes", type=float, default=4.0)
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (UserError, ValueError, FileNotFoundError) as error:
        if os.environ.get("NANOFORMER_DEBUG"):
            raise
        print(f"nanoformer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoformer {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

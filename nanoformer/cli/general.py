"""Commands for every family: info, train, evaluate, import-hf, export-hf."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanoformer.cli.common import DEVICES, load_checkpoint
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



def train_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with --device as one more."""
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={json.dumps(args.device)}")
    return overrides


def cmd_train(args: argparse.Namespace) -> None:
    from nanoformer.run_config import load_run_config

    run_training(load_run_config(args.config, train_overrides(args)), args)


def run_training(run, args: argparse.Namespace) -> None:
    """Train `run` into --out (default runs/CONFIG_NAME) and say how it ended; Ctrl-C exits 130."""
    from nanoformer.recipes import train

    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train(run, run_dir, resume=args.resume, progress=not args.quiet)
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    if run.train.best_metric == "val_loss":
        best = f"best val loss {best}"
    else:
        best = f"checkpoints/best chosen by val {run.train.best_metric} (its val loss {best})"
    print(f"stopped by {result.stopped_by} at step {result.step}; {best}; run folder {run_dir}")
    if result.stopped_by == "interrupt":
        raise KeyboardInterrupt



def cmd_evaluate(args: argparse.Namespace) -> None:
    """Dispatch on the family: perplexity (GPT), BLEU/chrF (translation), masked-token accuracy (BERT)."""
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    arch = model.config.arch
    if arch == "decoder":
        from nanoformer.cli.gpt import evaluate_lm

        return evaluate_lm(args, model, tokenizer)
    if arch == "encoder-decoder":
        from nanoformer.cli.translate import evaluate_translation

        return evaluate_translation(args, model, tokenizer)
    from nanoformer.cli.bert import evaluate_mlm

    return evaluate_mlm(args, model, tokenizer)


def cmd_import_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import import_hf

    print(f"wrote {import_hf(args.source, args.out)}")



def cmd_export_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import export_hf

    print(f"wrote {export_hf(args.checkpoint, args.out)}")



def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that runs `run_training` (train, finetune)."""
    parser.add_argument("--out", help="run folder (default: runs/CONFIG_NAME)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", choices=DEVICES, help="shorthand for --set train.device=...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:

    info = commands.add_parser("info", help="print a model's config and parameter table")
    info.add_argument("target", help="a preset name, a config .json/.toml, or a checkpoint / run folder")
    info.add_argument("--depth", type=int, default=3, help="module depth of the parameter table")
    info.set_defaults(handler=cmd_info)

    train = commands.add_parser("train", help="train a model from a TOML config")
    train.add_argument("config", help="a TOML file with [model], [data] and [train] sections (see configs/)")
    add_run_arguments(train)
    train.set_defaults(handler=cmd_train)

    ev = commands.add_parser("evaluate", help="evaluate a checkpoint: perplexity (GPT), BLEU/chrF (translation), MLM accuracy (BERT)")
    ev.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    ev.add_argument("--data", help="a standard set name, file or folder (default: the run's validation split)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens")
    ev.add_argument("--cache-dir", help="where token caches go (default: the run's data folder)")
    ev.add_argument("--src", help="translation: a source file, one sentence a line")
    ev.add_argument("--ref", help="translation: the reference translations, line-aligned with --src")
    ev.add_argument("--beam-size", type=int, default=4, help="translation: beam size (1 = greedy)")
    ev.add_argument("--length-penalty", type=float, default=1.0, help="translation: length penalty alpha")
    ev.add_argument("--split", default=None, help="which split of the run's data to evaluate (default: validation)")
    ev.add_argument("--device", default="cpu", choices=DEVICES)
    ev.set_defaults(handler=cmd_evaluate)

    imp = commands.add_parser("import-hf", help="convert a Hugging Face GPT-2 / BERT / Marian model folder to a checkpoint")
    imp.add_argument("source", help="a folder written by save_pretrained (or a hub id, when online)")
    imp.add_argument("out", help="the checkpoint folder to write")
    imp.set_defaults(handler=cmd_import_hf)

    exp = commands.add_parser("export-hf", help="write a checkpoint as a Hugging Face model folder")
    exp.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    exp.add_argument("out", help="the folder to write (save_pretrained layout)")
    exp.set_defaults(handler=cmd_export_hf)


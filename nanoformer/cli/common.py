"""Helpers shared by the command modules: loading a checkpoint, and running a training config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanoformer.errors import UserError


def load_checkpoint(path: str, device: str = "cpu", int8: bool = False, verify: bool = True):
    """(model, tokenizer) of a checkpoint or run folder; text commands need the tokenizer.

    int8: linear layers and token tables with int8 weights (nanoformer/quantize.py), on the CPU.
    verify: check the files against the checksums saved with them (training/checksums.py)."""
    import nanoformer

    check_int8_device(int8, device)
    model, tokenizer = nanoformer.load(path, device=resolve_device(device), quantize="int8" if int8 else None,
                                       verify=verify)
    if tokenizer is None:
        raise UserError(f"{path}: the checkpoint has no tokenizer.json; text commands need one")
    return model, tokenizer


def check_int8_device(int8: bool, device: str) -> None:
    if int8 and resolve_device(device) != "cpu":
        raise UserError(f"--int8 runs on the CPU's int8 kernels; drop --device {device} or --int8")


def resolve_device(name: str) -> str:
    from nanoformer.training.device import select_device

    return str(select_device(name))


def require_arch(model, arch: str, command: str, path: str) -> None:
    if model.config.arch != arch:
        raise UserError(f"{path}: `{command}` needs a model with arch {arch!r}, this checkpoint is {model.config.arch!r}")


DEVICES = ["auto", "cpu", "cuda", "mps"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that runs `run_training` (train, finetune)."""
    parser.add_argument("--out", help="run folder (default: runs/CONFIG_NAME)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", choices=DEVICES, help="shorthand for --set train.device=...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with --device as one more."""
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"train.device={json.dumps(args.device)}")
    return overrides


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


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that loads a checkpoint to run it."""
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights and int8 products on the CPU (faster, smaller; inference only)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the check of the checkpoint's files against their saved checksums")

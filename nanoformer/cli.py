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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoformer", description="The Transformer from first principles.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="print a model's config and parameter table")
    info.add_argument("target", help="a preset name, a config .json/.toml, or a checkpoint / run folder")
    info.add_argument("--depth", type=int, default=3, help="module depth of the parameter table")
    info.set_defaults(handler=cmd_info)
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

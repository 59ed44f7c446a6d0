"""The `nanoformer` command line.

Every mistake a user can fix ends as one line on stderr and exit code 2, without a traceback
(set NANOFORMER_DEBUG=1 to see it). Bugs keep their tracebacks. Each family's commands live in
their own module and register themselves here.
"""

from __future__ import annotations

import argparse
import os
import sys

from nanoformer.cli import bert, demo, general, gpt, translate, viz
from nanoformer.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoformer", description="The Transformer from first principles.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (general, gpt, translate, bert, viz, demo):
        module.register(commands)
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
    except BrokenPipeError:  # e.g. `nanoformer translate ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error when Python flushes at exit
        return 0
    except KeyboardInterrupt:
        print(f"nanoformer {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0

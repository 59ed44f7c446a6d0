"""The `nanoformer` command line: one table of commands, each a name, its arguments and its handler.

Every mistake a user can fix ends as one line on stderr and exit code 2, without a traceback
(set NANOFORMER_DEBUG=1 to see it). Bugs keep their tracebacks. Each family's commands live in
their own module (general, gpt, translate, bert, viz, serve, demo; `evaluate` dispatches on the family).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from nanoformer.cli import bert, demo, evaluate, general, gpt, serve, translate, viz
from nanoformer.errors import UserError


class Command(NamedTuple):
    name: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], None]
    help: str
    description: str | None = None


COMMANDS = [
    Command("info", general.args_info, general.cmd_info,
            "print a model's config and parameter table"),
    Command("train", general.args_train, general.cmd_train,
            "train a model from a TOML config"),
    Command("plan", general.args_plan, general.cmd_plan,
            "the model shape `train` would choose for a time budget on this machine, and its expected loss"),
    Command("pipeline", general.args_pipeline, general.cmd_pipeline,
            "run a pipeline of stages (pre-train, back-translate, warm-start, average, score), resumable"),
    Command("evaluate", evaluate.args_evaluate, evaluate.cmd_evaluate,
            "evaluate a checkpoint: perplexity (GPT), BLEU/chrF (translation), MLM accuracy (BERT)"),
    Command("import-hf", general.args_import_hf, general.cmd_import_hf,
            "convert a Hugging Face GPT-2 / BERT / Marian model folder to a checkpoint"),
    Command("export-hf", general.args_export_hf, general.cmd_export_hf,
            "write a checkpoint as a Hugging Face model folder"),
    Command("export-ct2", general.args_export_ct2, general.cmd_export_ct2,
            "write a translator, GPT or BERT-style checkpoint as a CTranslate2 model folder"),
    Command("export-onnx", general.args_export_onnx, general.cmd_export_onnx,
            "write an encoder (BERT-style) checkpoint as an ONNX graph: logits, hidden states, embeddings"),
    Command("quantize", general.args_quantize, general.cmd_quantize,
            "write a checkpoint with int8 weights for fast CPU inference"),
    Command("generate", gpt.args_generate, gpt.cmd_generate,
            "continue a prompt with a GPT-style model, streaming to stdout"),
    Command("translate", translate.args_translate, translate.cmd_translate,
            "translate sentences with an encoder-decoder checkpoint"),
    Command("average", translate.args_average, translate.cmd_average,
            "average the weights of a run's last N checkpoints (or of those given)"),
    Command("fill-mask", bert.args_fill_mask, bert.cmd_fill_mask,
            "predict the words hidden by [MASK] with a BERT-style model"),
    Command("finetune", bert.args_finetune, bert.cmd_finetune,
            "fine-tune an encoder as a classifier from a TOML config"),
    Command("classify", bert.args_classify, bert.cmd_classify,
            "classify sentences (or sentence pairs) with a fine-tuned encoder"),
    Command("embed", bert.args_embed, bert.cmd_embed,
            "sentence embeddings: the mean of an encoder's token states"),
    Command("attention", viz.args_attention, viz.cmd_attention,
            "attention maps of any model: PNG heatmaps, an offline HTML viewer and the raw weights", description="Gather every layer's and head's attention weights through the explicit attention path and "
            "write attention.html (head and model views), PNG heatmaps and attention.safetensors + attention.json."),
    Command("plot-positions", viz.args_plot_positions, viz.cmd_plot_positions,
            "plot the sinusoidal positional encoding or RoPE's rotations"),
    Command("plot-metrics", viz.args_plot_metrics, viz.cmd_plot_metrics,
            "plot loss, learning rate and throughput of a training run"),
    Command("serve", serve.args_serve, serve.cmd_serve,
            "serve models over HTTP: an OpenAI-style API, translation with attention, and a web playground"),
    Command("demo", demo.args_demo, demo.cmd_demo,
            "the study note end to end: train GPT, translation and BERT briefly, then look inside"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoformer", description="The Transformer from first principles.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        command.arguments(sub)
        sub.set_defaults(handler=command.handler, cli=main)  # `demo` runs the other commands through main
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

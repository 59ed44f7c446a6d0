"""`nanoformer evaluate`: one command, dispatched on the checkpoint's architecture.

    nanoformer evaluate runs/shakespeare_char                   # perplexity on the validation split
    nanoformer evaluate runs/multi30k_de_en --src test.de --ref test.en --beam-size 4   # sacreBLEU, chrF
    nanoformer evaluate runs/bert_mlm_ko                       # masked-token accuracy (classifiers: accuracy, F1)
"""

from __future__ import annotations

import argparse

from nanoformer.cli import bert, gpt, translate
from nanoformer.cli.common import DEVICES, add_load_arguments, load_checkpoint
from nanoformer.errors import UserError

# arch -> the family's evaluation: (args, model, tokenizer) -> None, printing its report
EVALUATORS = {
    "decoder": gpt.evaluate_lm,
    "encoder-decoder": translate.evaluate_translation,
    "encoder": bert.evaluate_mlm,
}


# The options each family's evaluation reads; any other family-specific option is refused, not ignored.
FAMILY_OPTIONS = {
    "decoder": {"data", "batch_size", "max_tokens", "cache_dir"},
    "encoder-decoder": {"src", "ref", "beam_size", "length_penalty", "split", "batch_size"},
    "encoder": {"data", "batch_size", "max_tokens", "cache_dir", "split"},
    "classifier": {"data", "split", "batch_size"},
}
FAMILY_NAMES = {"decoder": "a GPT-style decoder", "encoder-decoder": "a translator", "encoder": "a masked-LM encoder",
                "classifier": "a classifier"}


def check_options(args: argparse.Namespace, family: str, defaults: dict) -> None:
    """One line naming the first option given that this family's evaluation would not read."""
    used = FAMILY_OPTIONS[family]
    for name in sorted(set().union(*FAMILY_OPTIONS.values()) - used):
        if getattr(args, name) != defaults[name]:
            takes = sorted(f for f, options in FAMILY_OPTIONS.items() if name in options)
            raise UserError(f"--{name.replace('_', '-')} does not apply to {FAMILY_NAMES[family]} "
                            f"({args.checkpoint}); it is for {' and '.join(FAMILY_NAMES[f] for f in takes)}. "
                            f"This evaluation takes: {', '.join('--' + o.replace('_', '-') for o in sorted(used))}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    family = "classifier" if getattr(model, "is_classifier", False) else model.config.arch
    check_options(args, family, args.option_defaults)
    EVALUATORS[model.config.arch](args, model, tokenizer)


def args_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("--data", help="a standard set name, file or folder (default: the run's validation split)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens")
    parser.add_argument("--cache-dir", help="where token caches go (default: the run's data folder)")
    parser.add_argument("--src", help="translation: a source file, one sentence a line")
    parser.add_argument("--ref", help="translation: the reference translations, line-aligned with --src")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="translation: beam size (1 = greedy; default: the checkpoint's generation settings, else 4)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="translation: length penalty alpha (default: the checkpoint's, else 1.0)")
    parser.add_argument("--split", default=None, help="which split of the run's data to evaluate (default: validation)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)
    parser.set_defaults(option_defaults={name: parser.get_default(name) for name in set().union(*FAMILY_OPTIONS.values())})

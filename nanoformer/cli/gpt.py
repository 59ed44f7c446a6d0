"""GPT-family commands: generate, and the language-model branch of evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanoformer.cli.common import DEVICES, add_load_arguments, load_checkpoint, require_arch
from nanoformer.errors import UserError

GENERATE_TEMPERATURE = 0.8


GENERATE_SEED = 1337


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from nanoformer.generation.text import generate_text

    if args.greedy:
        ignored = [name for name, given in (("--temperature", args.temperature != GENERATE_TEMPERATURE),
                                            ("--top-k", args.top_k is not None), ("--top-p", args.top_p is not None),
                                            ("--seed", args.seed is not None), ("--num-samples", args.num_samples != 1))
                   if given]
        if ignored:
            raise UserError(f"--greedy always takes the most likely token, so {', '.join(ignored)} would do nothing; "
                            "drop them, or drop --greedy to sample")
    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    require_arch(model, "decoder", "generate", args.checkpoint)
    generator = torch.Generator(device=next(model.parameters()).device)
    generator.manual_seed(GENERATE_SEED if args.seed is None else args.seed)
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



def evaluate_lm(args: argparse.Namespace, model, tokenizer) -> None:
    """Loss and perplexity over every token of a text (default: the run's validation split)."""
    import numpy as np

    from nanoformer.api import resolve_checkpoint
    from nanoformer.data.lm import LMData, build_token_cache, open_token_cache
    from nanoformer.data.text import resolve_text_files
    from nanoformer.evaluation.perplexity import evaluate_stream
    from nanoformer.training.checkpoint import read_config

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



def args_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("--prompt", default="", help="text to continue (empty: start from scratch)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--temperature", type=float, default=GENERATE_TEMPERATURE)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--stop", action="append", help="stop when this string appears (repeatable)")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help=f"sampling: the random seed ({GENERATE_SEED})")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)

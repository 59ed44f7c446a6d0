"""Translation commands (translate, average) and the translation branch of evaluate.

    nanoformer translate runs/multi30k_de_en "Ein Mann fährt Fahrrad."
    nanoformer translate runs/ko_en --input news.ko --output news.en --beam-size 4
    cat sentences.de | nanoformer translate runs/multi30k_de_en > sentences.en
    nanoformer average runs/multi30k_de_en --last 5 --out runs/multi30k_de_en/checkpoints/avg5
    nanoformer evaluate runs/multi30k_de_en --split test_2016_flickr
    nanoformer evaluate CKPT --src test.de --ref test.en
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from nanoformer.cli.common import DEVICES, add_load_arguments, load_checkpoint, require_arch
from nanoformer.data.text import decode_utf8
from nanoformer.errors import UserError

STDIN = "-"


def _read_input(name: str) -> list[str]:
    """Lines of a file (or "-" for stdin), split on "\\n" only; invalid UTF-8 names file, line and byte."""
    if name == STDIN:
        data, label = sys.stdin.buffer.read(), "<stdin>"
    else:
        path = Path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{name}: no such file; give a text file with one sentence a line") from None
        except IsADirectoryError:
            raise UserError(f"{name}: is a folder; give a text file with one sentence a line") from None
        label = name
    text = decode_utf8(data, label)
    if not text:
        return []
    text = text.removesuffix("\n")
    return [line.rstrip("\r") for line in text.split("\n")]


def _write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from nanoformer.data.text import write_bytes_atomic

    write_bytes_atomic(Path(path), text.encode("utf-8"))  # all or nothing: never half a file


def _source_tokenizer(checkpoint: str, tokenizer):
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import resolve_checkpoint

    return load_source_tokenizer(resolve_checkpoint(checkpoint), tokenizer)


def _show_warnings():
    """Print library warnings (truncated sources) as one 'warning:' line each on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("always", UserWarning)


BUILT_IN = {"beam_size": 4, "length_penalty": 1.0, "max_len_a": 1.5, "max_len_b": 10}


def decoding_options(args: argparse.Namespace) -> dict:
    """Beam size, length penalty and limits: the options given, else the checkpoint's `generation`
    section (an imported Hugging Face model's settings, interop/generation.py), else ours.
    (`evaluate` has no length-limit options: its limits come from the checkpoint, else ours.)"""
    from nanoformer.training.checkpoint import read_config

    saved = read_config(args.checkpoint).get("generation") or {}
    options = {name: getattr(args, name) if getattr(args, name, None) is not None else saved.get(name, default)
               for name, default in BUILT_IN.items()}
    return {**options, "bad_ids": saved.get("bad_ids") or None, "force_eos": bool(saved.get("force_eos", False))}


def sampling_options(args: argparse.Namespace) -> dict | None:
    """--sample and its settings (back-translation's sampled sources); None for search."""
    import torch

    if not args.sample:
        given = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                          ("--top-p", args.top_p), ("--seed", args.seed)) if value is not None]
        if given:
            raise UserError(f"{', '.join(given)} set(s) how to sample; add --sample, or leave them out for search")
        return None
    if args.beam_size not in (None, 1):
        raise UserError(f"--sample draws one translation per sentence; drop --beam-size {args.beam_size}")
    temperature = 1.0 if args.temperature is None else args.temperature
    if temperature <= 0:
        raise UserError(f"--temperature {temperature}: use a number > 0 (1.0 samples the model's distribution)")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: use 1 or more")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p {args.top_p}: use a probability in (0, 1]")
    generator = torch.Generator(device=args.device).manual_seed(0 if args.seed is None else args.seed)
    return {"do_sample": True, "temperature": temperature, "top_k": args.top_k, "top_p": args.top_p,
            "generator": generator}


def cmd_translate(args: argparse.Namespace) -> None:
    from nanoformer.generation.translation import translate_texts

    if args.text and args.input:
        raise UserError("give sentences as arguments or --input FILE, not both")
    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    require_arch(model, "encoder-decoder", "translate", args.checkpoint)
    if args.text:
        lines, label = list(args.text), "argument"
    else:
        name = args.input or STDIN
        lines, label = _read_input(name), ("<stdin>" if name == STDIN else name)
    progress = not args.quiet and args.input is not None and args.input != STDIN
    sampling = sampling_options(args)
    options = decoding_options(args)
    if sampling is not None:
        options["beam_size"] = 1
    if args.length_penalty is not None and options["beam_size"] == 1:
        how = "--sample draws" if sampling is not None else "beam size 1 (greedy) takes"
        raise UserError(f"--length-penalty ranks the finished hypotheses of beam search, but {how} one translation; "
                        "drop it, or give --beam-size 2 or more")
    with warnings.catch_warnings():
        _show_warnings()
        outputs = translate_texts(
            model, tokenizer, lines, source_tokenizer=_source_tokenizer(args.checkpoint, tokenizer),
            batch_size=args.batch_size, truncate=not args.no_truncate, progress=progress,
            where=lambda i: f"argument {i + 1}" if label == "argument" else f"{label}:{i + 1}",
            sampling=sampling, **options,
        )
    _write_output(args.output, outputs)


def evaluate_translation(args: argparse.Namespace, model, tokenizer) -> None:
    """BLEU and chrF of the checkpoint's translations, as one JSON line on stdout.

    With --src/--ref: those files. Without: the run's --split (default: its validation split),
    read from the files recorded in the checkpoint's config.
    """
    from nanoformer.data.parallel import SplitFiles, read_split
    from nanoformer.evaluation.bleu import (
        TOKENIZE_FOR_TARGET,
        evaluate_translations,
        read_lines_for_scoring,
    )
    from nanoformer.training.checkpoint import read_config, resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    data = read_config(folder).get("data", {})
    if (args.src is None) != (args.ref is None):
        raise UserError("give both --src FILE and --ref FILE (line-aligned), or neither to use the run's data")
    if args.src is not None:
        sources, references = read_lines_for_scoring(args.src), read_lines_for_scoring(args.ref)
        if len(sources) != len(references):
            raise UserError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}; "
                            "line i of --ref must translate line i of --src")
        what = f"{args.src} -> {args.ref}"

        def where(i: int) -> str:
            return f"{args.src}:{i + 1}"
    else:
        files = data.get("files")
        if not files:
            raise UserError(f"{folder}: the checkpoint does not record its data; pass --src FILE --ref FILE")
        split = args.split or data.get("valid_split", "val")
        if split not in files:
            raise UserError(f"{folder}: no split {split!r} in the run's data; it has {', '.join(sorted(files))}")
        text = read_split(SplitFiles.from_json(split, files[split]), skip_empty=bool(data.get("skip_empty")))
        sources, references = text.src, text.tgt
        what = f"{data.get('name') or data.get('path')} {split} ({data.get('src_lang')}-{data.get('tgt_lang')})"
        where = text.where
    with warnings.catch_warnings():
        _show_warnings()
        scores, _ = evaluate_translations(
            model, tokenizer, sources, references, source_tokenizer=_source_tokenizer(folder, tokenizer),
            batch_size=args.batch_size, tokenize=TOKENIZE_FOR_TARGET.get(data.get("tgt_lang"), "13a"), progress=True,
            where=where, **decoding_options(args),
        )
    print(f"BLEU {scores['bleu']:.2f} (chrF {scores['chrf']:.2f})  {scores['signature']}", file=sys.stderr)
    record = {"data": what, **{k: v for k, v in scores.items() if k != "bleu_detail"}, "detail": scores["bleu_detail"]}
    print(json.dumps(record, ensure_ascii=False))


def cmd_average(args: argparse.Namespace) -> None:
    """Average the weights of a run's last N numbered checkpoints, or of the checkpoints given."""
    from nanoformer.data.text import write_bytes_atomic
    from nanoformer.recipes.translation import SOURCE_TOKENIZER_FILE
    from nanoformer.training.checkpoint import (
        average_checkpoints,
        numbered_checkpoints,
        resolve_checkpoint,
    )

    if args.last is not None and args.last < 1:
        raise UserError(f"--last {args.last}: average at least 1 checkpoint")
    if len(args.checkpoints) == 1 and numbered_checkpoints(args.checkpoints[0]):
        found = numbered_checkpoints(args.checkpoints[0])
        paths = found[-args.last:] if args.last else found
    elif len(args.checkpoints) == 1 and Path(args.checkpoints[0], "checkpoints").is_dir():
        raise UserError(f"{args.checkpoints[0]}: the run has no numbered checkpoints (checkpoints/step-*); train with "
                        "[train] keep_last = N to keep them, or pass checkpoint folders")
    else:
        paths = [Path(p) for p in args.checkpoints]
        paths = paths[-args.last:] if args.last else paths
    out = average_checkpoints(paths, args.out)
    source_tok = resolve_checkpoint(paths[-1]) / SOURCE_TOKENIZER_FILE
    if source_tok.is_file():
        write_bytes_atomic(out / SOURCE_TOKENIZER_FILE, source_tok.read_bytes())
    names = ", ".join(Path(p).name for p in paths)
    print(f"wrote {out}: the mean of {len(paths)} checkpoint(s) ({names})")


def args_translate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("text", nargs="*", help="sentences to translate (default: read --input, or stdin)")
    parser.add_argument("--input", "-i", help="a text file, one sentence a line ('-' = stdin)")
    parser.add_argument("--output", "-o", help="write the translations here (atomically) instead of stdout")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="beam size, 1 = greedy (default: the checkpoint's generation settings, else 4)")
    parser.add_argument("--length-penalty", type=float, default=None, help="length penalty alpha of beam search (1.0)")
    parser.add_argument("--max-len-a", type=float, default=None,
                        help="generate at most a x source length + b tokens (default a = 1.5, b = 10)")
    parser.add_argument("--max-len-b", type=int, default=None)
    parser.add_argument("--sample", action="store_true",
                        help="draw each token instead of searching (back-translation's synthetic sources)")
    parser.add_argument("--temperature", type=float, default=None, help="with --sample: scale the logits (1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="with --sample: draw from the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="with --sample: draw from the nucleus of mass p")
    parser.add_argument("--seed", type=int, default=None, help="with --sample: the random seed (0)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    parser.add_argument("--no-truncate", action="store_true", help="refuse sources longer than the model's positions")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)


def args_average(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="RUN_DIR|CKPT",
                    help="a run folder (its numbered checkpoints/step-*) or checkpoint folders")
    parser.add_argument("--last", type=int, default=None, help="average only the last N (default: all)")
    parser.add_argument("--out", required=True, help="the checkpoint folder to write")

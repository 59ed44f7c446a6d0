"""BERT-family commands: fill-mask, finetune, classify, embed, and the encoder branch of evaluate.

    nanoformer fill-mask runs/bert_mlm_ko "나는 [MASK]에 갔다" --top-k 5
    nanoformer finetune configs/sst2_finetune.toml            # [model] init_from = a pre-trained run
    nanoformer classify runs/sst2_finetune "a gorgeous , witty film"
    nanoformer embed CKPT --input sentences.txt --output vectors.npy
    nanoformer evaluate runs/bert_mlm_ko                      # masked-token accuracy, MLM perplexity
    nanoformer evaluate runs/sst2_finetune --data test.tsv    # accuracy, F1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanoformer.cli.common import (
    DEVICES,
    add_load_arguments,
    add_run_arguments,
    load_checkpoint,
    require_arch,
    run_training,
    train_overrides,
)
from nanoformer.errors import UserError

# --------------------------------------------------------------------------- helpers


def _saved_data(checkpoint: str) -> tuple[Path, dict]:
    from nanoformer.api import resolve_checkpoint
    from nanoformer.training.checkpoint import read_config

    folder = resolve_checkpoint(checkpoint)
    return folder, read_config(folder).get("data", {})


def _require_classifier(model, command: str, path: str) -> None:
    require_arch(model, "encoder", command, path)
    if not model.is_classifier:
        raise UserError(f"{path}: `{command}` needs a fine-tuned classifier; this checkpoint is a masked-LM model "
                        "(fine-tune it first: nanoformer finetune CONFIG with [model] init_from)")


def _read_inputs(path: str, data: dict, text_column, pair_column, with_labels: bool = False, fmt: str | None = None):
    """Examples from --input / --data.

    `fmt` ("lines", "tsv", "csv", "label_first") or else: a .tsv or .csv file is read by columns
    (the run's column settings when it was fine-tuned on the same format); with labels, any other
    file is read in the run's format (e.g. SST-2's "<label> <text>" lines); without labels, any
    other file is one text per line.
    """
    from nanoformer.data.classification import Example, read_examples
    from nanoformer.data.text import find_data_file, read_text

    file = find_data_file(path)
    suffix = file.suffix.lower()
    run_format = data.get("format", "auto") if data.get("kind") == "classification" else None
    if fmt is None:
        if suffix in (".tsv", ".csv"):
            fmt = suffix[1:]
        elif with_labels and run_format not in (None, "auto"):
            fmt = run_format
        elif with_labels:
            raise UserError(f"{file}: cannot tell the format; give a .tsv or .csv file with a header (sentence, label)")
        else:
            fmt = "lines"
    if fmt == "lines":
        lines = read_text(file).splitlines()
        return [Example(line, None, None, f"{file}:{i}") for i, line in enumerate(lines, start=1)]
    same = run_format in (fmt, "auto") and run_format is not None
    settings = data if same else {}
    return read_examples(
        file, fmt, header=settings.get("header", True),
        text_column=text_column if text_column is not None else settings.get("text_column"),
        text_pair_column=pair_column if pair_column is not None else settings.get("text_pair_column"),
        label_column=settings.get("label_column") if with_labels else None, with_labels=with_labels,
    )


def _batches(tokenizer, examples, max_length: int, batch_size: int, truncate: bool, token_types: bool):
    from nanoformer.data.classification import encode_example, pad_batch

    rows = [encode_example(tokenizer, e.text, e.pair, max_length, e.where, truncate=truncate) for e in examples]
    for start in range(0, len(rows), batch_size):
        batch = pad_batch(rows[start:start + batch_size], tokenizer.pad_id)
        if not token_types:
            batch.pop("token_type_ids")
        yield batch


# --------------------------------------------------------------------------- fill-mask


def refuse_input_options(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Options that say how to read --input are refused without one (texts given as arguments)."""
    given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]
    if given and not args.input:
        raise UserError(f"{', '.join(given)} say(s) how to read --input FILE, but the texts are arguments; "
                        "drop them, or pass --input")


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from nanoformer.evaluation.mlm import fill_mask

    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    require_arch(model, "encoder", "fill-mask", args.checkpoint)
    results = fill_mask(model, tokenizer, args.text, args.top_k)
    for number, candidates in enumerate(results, start=1):
        if args.json:
            print(json.dumps({"mask": number, "candidates": [
                {"token": c.token, "probability": round(c.probability, 6), "sequence": c.sequence}
                for c in candidates]}, ensure_ascii=False))
            continue
        if len(results) > 1:
            print(f"[MASK] {number}:")
        width = max(len(c.token) for c in candidates)
        for c in candidates:
            print(f"  {c.token:<{width}}  {c.probability:.4f}  {c.sequence}")


# --------------------------------------------------------------------------- finetune


def cmd_finetune(args: argparse.Namespace) -> None:
    from nanoformer.recipes.classification import load_finetune_config

    run_training(load_finetune_config(args.config, train_overrides(args), init_from=args.init_from), args)


# --------------------------------------------------------------------------- classify


def cmd_classify(args: argparse.Namespace) -> None:
    from nanoformer.data.classification import Example
    from nanoformer.evaluation.classification import predict

    if bool(args.text) == bool(args.input):
        raise UserError("give the text(s) to classify as arguments or --input FILE (one of the two)")
    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    _require_classifier(model, "classify", args.checkpoint)
    if args.pair is not None and (args.input or len(args.text) != 1):
        raise UserError("--pair goes with exactly one text argument; for many pairs use --input FILE.tsv with --pair-column")
    refuse_input_options(args, ("text_column", "pair_column", "format"))
    if args.input:
        _, data = _saved_data(args.checkpoint)
        examples = _read_inputs(args.input, data, args.text_column, args.pair_column, fmt=args.format)
    else:
        examples = [Example(text, args.pair, None, f"text {i}") for i, text in enumerate(args.text, start=1)]
    config = model.config
    labels = config.labels or [str(i) for i in range(config.num_labels)]
    batches = _batches(tokenizer, examples, config.max_positions, args.batch_size, args.truncate,
                       config.type_vocab_size > 0)
    probs, _ = predict(model, batches)
    for example, row in zip(examples, probs.tolist()):
        best = max(range(len(row)), key=row.__getitem__)
        if args.json:
            record = {"text": example.text, "label": labels[best], "probability": round(row[best], 6),
                      "probabilities": {label: round(p, 6) for label, p in zip(labels, row)}}
            if example.pair is not None:
                record["pair"] = example.pair
            print(json.dumps(record, ensure_ascii=False))
        else:
            text = example.text if example.pair is None else f"{example.text} ||| {example.pair}"
            print(f"{labels[best]}\t{row[best]:.4f}\t{text}")


# --------------------------------------------------------------------------- embed


def cmd_embed(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from nanoformer.data.classification import Example

    model, tokenizer = load_checkpoint(args.checkpoint, args.device, args.int8, not args.no_verify)
    require_arch(model, "encoder", "embed", args.checkpoint)
    if args.input and args.text:
        raise UserError("give the sentences to embed as arguments or --input FILE, not both")
    refuse_input_options(args, ("text_column",))
    if args.input:
        examples = _read_inputs(args.input, {}, args.text_column, None)
    elif args.text:
        examples = [Example(text, None, None, f"text {i}") for i, text in enumerate(args.text, start=1)]
    else:
        raise UserError("give the sentences to embed as arguments or --input FILE (one sentence a line)")
    device = next(model.parameters()).device
    vectors = []
    with torch.inference_mode():
        for batch in _batches(tokenizer, examples, model.config.max_positions, args.batch_size, args.truncate, False):
            batch = {k: v.to(device) for k, v in batch.items()}
            vectors.append(model.embed(batch["input_ids"], batch["attention_mask"], normalize=not args.no_normalize).float().cpu())
    matrix = torch.cat(vectors).numpy()
    if args.output and args.output.endswith(".npy"):
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.output, matrix)
        print(f"wrote {matrix.shape[0]} vectors of size {matrix.shape[1]} to {args.output}", file=sys.stderr)
        return
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for example, vector in zip(examples, matrix.tolist()):
            out.write(json.dumps({"text": example.text, "embedding": [round(x, 7) for x in vector]}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


# --------------------------------------------------------------------------- evaluate


def evaluate_mlm(args: argparse.Namespace, model, tokenizer) -> None:
    """`nanoformer evaluate` for encoders: masked-LM accuracy and perplexity, or a classifier's accuracy and F1."""
    if model.is_classifier:
        return _evaluate_classifier(args, model, tokenizer)
    from dataclasses import fields

    import numpy as np

    from nanoformer.data.masking import Masker
    from nanoformer.data.mlm import MLMBatches, MLMDataConfig, build_sequences
    from nanoformer.data.sequence_packing import pack_units
    from nanoformer.data.units import read_units
    from nanoformer.data.text import resolve_text_files
    from nanoformer.evaluation.mlm import evaluate_mlm as run_evaluation
    from nanoformer.training.checkpoint import read_config

    folder, data = _saved_data(args.checkpoint)
    seed = int(read_config(folder).get("train", {}).get("seed", 0))
    known = {f.name for f in fields(MLMDataConfig)}
    settings = {k: v for k, v in data.items() if k in known} if data.get("kind", "mlm") == "mlm" else {}
    settings.setdefault("path", args.data or "-")
    settings["max_length"] = min(int(settings.get("max_length", 128)), model.config.max_positions)
    config = MLMDataConfig(**settings)
    if args.data:
        files = resolve_text_files(args.data)
        units = [np.asarray(ids, dtype=np.int32) for f in files
                 for ids in tokenizer.encode_batch(read_units(f, config.text_column))]
        packed = pack_units(units, config.max_length, config.pairs and model.config.type_vocab_size >= 2,
                            np.random.default_rng(seed))
        what = args.data
    else:
        if not data.get("files"):
            raise UserError(f"{folder}: the checkpoint does not say which text it was trained on; pass --data FILE")
        cache_dir = Path(args.cache_dir) if args.cache_dir else folder.parent.parent / "data"
        split = args.split or "val"
        if split not in ("train", "val"):
            raise UserError(f"--split {split!r}: use 'val' (held out) or 'train'")
        packed = build_sequences([Path(f) for f in data["files"]], tokenizer, config, cache_dir, seed=seed,
                                 label_first=[Path(f) for f in data.get("label_first_files", [])])[split]
        source = data.get("path") or data.get("name") or data.get("label_first")
        source = ", ".join(source) if isinstance(source, list) else source
        what = f"{source} ({'validation' if split == 'val' else 'training'} split)"
    masker = Masker(tokenizer, config.mask_prob, config.mask_token_prob, config.random_token_prob, config.whole_word_mask)
    batches = MLMBatches({"eval": packed}, tokenizer, masker, args.batch_size, seed=seed,
                         token_types=model.config.type_vocab_size > 0)
    result = run_evaluation(model, batches.eval_batches("eval"), max_tokens=args.max_tokens)
    print(json.dumps({"data": what, "sequences": result.sequences, "masked_tokens": result.masked_tokens,
                      "accuracy": round(result.accuracy, 4), "loss": round(result.loss, 4),
                      "perplexity": round(result.perplexity, 3)}, ensure_ascii=False))


def _evaluate_classifier(args: argparse.Namespace, model, tokenizer) -> None:
    from nanoformer.data.classification import check_labels
    from nanoformer.evaluation.classification import evaluate_classifier

    folder, data = _saved_data(args.checkpoint)
    path = args.data
    if path is None:
        files = data.get("files") or {}
        split = args.split or ("test" if "test" in files else "dev")
        if split not in files:
            raise UserError(f"{folder}: the run has no {split!r} file; pass --data FILE (a labelled .tsv/.csv)")
        path = files[split]
    examples = _read_inputs(path, data, None, None, with_labels=True)
    config = model.config
    labels = config.labels or [str(i) for i in range(config.num_labels)]
    check_labels(examples, labels, "the checkpoint's classes")
    index = {label: i for i, label in enumerate(labels)}

    def batches():
        import torch

        for start, batch in zip(range(0, len(examples), args.batch_size),
                                _batches(tokenizer, examples, config.max_positions, args.batch_size, True,
                                         config.type_vocab_size > 0)):
            chunk = examples[start:start + args.batch_size]
            batch["labels"] = torch.tensor([index[e.label] for e in chunk])
            yield batch

    metrics = evaluate_classifier(model, batches(), labels)
    print(json.dumps({"data": str(path), **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()
                                            if k != "f1_per_label"},
                      "f1_per_label": {k: round(v, 4) for k, v in metrics["f1_per_label"].items()}}, ensure_ascii=False))


# --------------------------------------------------------------------------- registration


def args_fill_mask(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("text", help='text with one or more [MASK], e.g. "나는 [MASK]에 갔다"')
    parser.add_argument("--top-k", type=int, default=5, help="candidates per mask")
    parser.add_argument("--json", action="store_true", help="one JSON line per mask")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)


def args_finetune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a TOML file with [model] (init_from = a pre-trained run), [data] and [train]")
    parser.add_argument("--init-from", help="the pre-trained run or checkpoint folder (overrides [model] init_from)")
    add_run_arguments(parser)


def args_classify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a fine-tuned run folder or checkpoint folder")
    parser.add_argument("text", nargs="*", help="the sentence(s) to classify")
    parser.add_argument("--pair", help="the second sentence of a pair task (with one text)")
    parser.add_argument("--input", help="a file: one sentence a line, or a .tsv/.csv with the run's text columns")
    parser.add_argument("--format", choices=["lines", "tsv", "csv", "label_first"],
                     help="--input format (default: .tsv/.csv by suffix, else one text a line); label_first drops the labels")
    parser.add_argument("--text-column", help="--input .tsv/.csv: the text column (default: the run's)")
    parser.add_argument("--pair-column", help="--input .tsv/.csv: the second sentence's column")
    parser.add_argument("--truncate", action="store_true", help="cut texts longer than the model's positions instead of refusing")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="JSON lines with every class's probability")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)


def args_embed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder or checkpoint folder of an encoder")
    parser.add_argument("text", nargs="*", help="sentence(s) to embed (or use --input)")
    parser.add_argument("--input", help="a file with one sentence a line (or a .tsv/.csv with a text column)")
    parser.add_argument("--text-column", help="--input .tsv/.csv: the text column")
    parser.add_argument("--output", help="write here: *.npy (a float32 matrix) or JSON lines (default: stdout)")
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw mean instead of unit length")
    parser.add_argument("--truncate", action="store_true", help="cut texts longer than the model's positions instead of refusing")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    add_load_arguments(parser)

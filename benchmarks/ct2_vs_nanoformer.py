"""nanoformer against CTranslate2 on the same trained translator, side by side in one process.

The checkpoint is exported with `nanoformer export-ct2` (float32 and int8), and both engines
translate the same sentences in the same batches: sorted by source length as `nanoformer
translate` sorts them, cut into batches of --batch sentences, each batch with one length limit
(CTranslate2's `max_decoding_length`, our `max_new_tokens`: 1.5 x its longest source + 10), both
with 2 threads (torch threads, CTranslate2 `intra_threads`). Each engine runs each pass in a
process of its own, engines alternating: in one process, torch's OpenMP runtime and the one
CTranslate2 ships slow each other down (after a CTranslate2 call, torch's kernels ran on about one
core in this benchmark's first form). Each line gives sentences/s, sacreBLEU
against the references and the share of outputs identical to nanoformer fp32's, for greedy and
beam 4, for nanoformer fp32 and int8 (`--int8`) and CTranslate2 float32 and int8. Beam search stops as CTranslate2's does (a sentence is done when it has beam_size finished
hypotheses: our `early_stopping=True`) unless --early-stopping says otherwise.

    python benchmarks/ct2_vs_nanoformer.py runs/m30k-20min --out benchmarks/results/ct2_vs_nanoformer.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# CTranslate2 before torch, in every process: it ships its own OpenMP runtime, and imported after
# torch has run, its 2 threads ran at 1.06 CPU/wall and 4.7x slower (170 against 870 sentences/s
# on the Zen 4, 2026-12-07; docs/benchmarks.md "Deploy"). Imported first, it runs as it does alone.
import ctranslate2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, write_result  # noqa: E402

import nanoformer  # noqa: E402
from nanoformer.data.text import find_data_file  # noqa: E402
from nanoformer.generation.loop import generating  # noqa: E402
from nanoformer.generation.translation import encode_sources  # noqa: E402
from nanoformer.interop.ctranslate2 import export_ct2  # noqa: E402


def batches(sources: list[list[int]], size: int) -> list[list[int]]:
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
    return [order[i : i + size] for i in range(0, len(order), size)]


def limit(rows: list[int], sources: list[list[int]], max_positions: int) -> int:
    return max(1, min(max_positions - 1, math.ceil(1.5 * max(len(sources[i]) for i in rows) + 10)))


def run_ours(model, sources, groups, beam: int, early_stopping) -> tuple[list[list[int]], float]:
    pad, eos = model.config.pad_id, model.config.eos_id
    out: list[list[int]] = [[] for _ in sources]
    start = time.perf_counter()
    with generating(model):  # as nanoformer.translate_ids does: weights packed once for all batches
        for rows in groups:
            longest = max(len(sources[i]) for i in rows)
            ids = torch.full((len(rows), longest), pad, dtype=torch.long)
            mask = torch.zeros_like(ids, dtype=torch.bool)
            for r, i in enumerate(rows):
                ids[r, : len(sources[i])] = torch.tensor(sources[i])
                mask[r, : len(sources[i])] = True
            options = {"early_stopping": early_stopping} if beam > 1 else {}
            result = model.generate(ids, max_new_tokens=limit(rows, sources, model.config.max_positions),
                                    src_padding_mask=None if bool(mask.all()) else mask, beam_size=beam, **options)
            for r, i in enumerate(rows):
                tokens = result[r, 1:].tolist()
                out[i] = tokens[: tokens.index(eos)] if eos in tokens else tokens
    return out, time.perf_counter() - start


def run_ct2(translator, vocab, index, sources, groups, beam: int, max_positions: int) -> tuple[list[list[int]], float]:
    out: list[list[int]] = [[] for _ in sources]
    start = time.perf_counter()
    for rows in groups:
        tokens = [[vocab[t] for t in sources[i]] for i in rows]
        results = translator.translate_batch(tokens, beam_size=beam, max_decoding_length=limit(rows, sources, max_positions),
                                             max_batch_size=len(rows))
        for i, result in zip(rows, results):
            out[i] = [index[t] for t in result.hypotheses[0]]
    return out, time.perf_counter() - start


ENGINES = ("nanoformer_fp32", "nanoformer_int8", "ct2_fp32", "ct2_int8")


def engine_pass(args: argparse.Namespace) -> None:
    """One engine, every batch size and beam, in this process alone: outputs and seconds as JSON."""
    torch.set_num_threads(args.threads)
    model, tokenizer = nanoformer.load(args.checkpoint, quantize="int8" if args.engine == "nanoformer_int8" else None)
    texts = find_data_file(args.src).read_text(encoding="utf-8").splitlines()[: args.sentences]
    sources = encode_sources(texts, tokenizer, model.config.max_positions)
    early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    if args.engine.startswith("ct2"):
        translator = ctranslate2.Translator(str(Path(args.models) / args.engine), device="cpu",
                                            intra_threads=args.ct2_threads or args.threads, inter_threads=1)
        vocab = [tokenizer.id_to_token(i) for i in range(model.config.tgt_vocab_size)]
        index = {token: i for i, token in enumerate(vocab)}
    results = {}
    for batch in args.batch:
        groups = batches(sources, batch)
        for beam in (1, 4):
            if args.engine.startswith("nanoformer"):
                run_ours(model, sources, groups[:2], beam, early)  # warm-up
                outputs, seconds = run_ours(model, sources, groups, beam, early)
            else:
                run_ct2(translator, vocab, index, sources, groups[:2], beam, model.config.max_positions)
                outputs, seconds = run_ct2(translator, vocab, index, sources, groups, beam, model.config.max_positions)
            results[f"{batch}/{beam}"] = {"outputs": outputs, "seconds": seconds}
    Path(args.result).write_text(json.dumps(results), encoding="utf-8")


def main() -> None:
    import sacrebleu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a trained translation run or checkpoint")
    parser.add_argument("--src", default="multi30k/test_2016_flickr.de")
    parser.add_argument("--ref", default="multi30k/test_2016_flickr.en")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ct2-threads", type=int, default=None,
                        help="CTranslate2's intra_threads (default: --threads); on some machines 1 runs faster than 2")
    parser.add_argument("--early-stopping", default="true", choices=["true", "false", "never"],
                        help="our beam search's stopping rule (CTranslate2 stops at beam_size finished hypotheses)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per engine (median), engines alternating")
    parser.add_argument("--out", default=None)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # internal: one engine's pass
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return engine_pass(args)
    model, tokenizer = nanoformer.load(args.checkpoint)
    texts = find_data_file(args.src).read_text(encoding="utf-8").splitlines()[: args.sentences]
    refs = find_data_file(args.ref).read_text(encoding="utf-8").splitlines()[: args.sentences]
    peaks = matmul_peaks()
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in ("float32", "int8"):
            name = "ct2_fp32" if quantization == "float32" else "ct2_int8"
            export_ct2(args.checkpoint, Path(tmp) / name, None if quantization == "float32" else quantization)
        # Each engine runs in a process of its own, in alternating order: in one process, torch's and
        # CTranslate2's OpenMP runtimes slow each other down (docs/benchmarks.md).
        passes: dict[str, list[dict]] = {name: [] for name in ENGINES}
        for r in range(args.rounds):
            for name in (ENGINES if r % 2 == 0 else tuple(reversed(ENGINES))):
                result = Path(tmp) / f"{name}-{r}.json"
                command = [sys.executable, __file__, args.checkpoint, "--engine", name, "--models", tmp,
                           "--result", str(result), "--src", args.src, "--sentences", str(args.sentences),
                           "--threads", str(args.threads), "--early-stopping", args.early_stopping,
                           "--ct2-threads", str(args.ct2_threads or args.threads),
                           "--batch", *map(str, args.batch)]
                subprocess.run(command, check=True)
                passes[name].append(json.loads(result.read_text(encoding="utf-8")))
        for batch in args.batch:
            for beam in (1, 4):
                key = f"{batch}/{beam}"
                runs = {name: (passes[name][0][key]["outputs"], statistics.median(p[key]["seconds"] for p in passes[name]))
                        for name in ENGINES}
                reference = runs["nanoformer_fp32"][0]
                row = {"checkpoint": args.checkpoint, "sentences": len(texts), "batch": batch, "beam": beam,
                       "rounds": args.rounds, "threads": args.threads, "ct2_threads": args.ct2_threads or args.threads,
                       "early_stopping": args.early_stopping if beam > 1 else None,
                       "matmul_peaks_gflops": {k: round(v, 1) for k, v in peaks.items()}, "ct2_version": ctranslate2.__version__,
                       "processes": "one per engine and pass", "ct2_imported_before_torch": True}
                for name, (outputs, seconds) in runs.items():
                    hyps = [tokenizer.decode(o) for o in outputs]
                    row[f"{name}_sentences_per_s"] = round(len(texts) / seconds, 1)
                    row[f"{name}_bleu"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
                    row[f"{name}_identical_to_nanoformer_fp32"] = round(
                        sum(a == b for a, b in zip(outputs, reference)) / len(texts), 4)
                row["ratio_nanoformer_over_ct2_fp32"] = round(row["nanoformer_fp32_sentences_per_s"] / row["ct2_fp32_sentences_per_s"], 3)
                write_result("ct2_vs_nanoformer", row, args.out)


if __name__ == "__main__":
    main()

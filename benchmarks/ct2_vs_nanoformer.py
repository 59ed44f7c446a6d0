"""nanoformer against CTranslate2 on the same trained translator, side by side in one process.

The checkpoint is exported with `nanoformer export-ct2` (float32 and int8), and both engines
translate the same sentences in the same batches: sorted by source length as `nanoformer
translate` sorts them, cut into batches of --batch sentences, each batch with one length limit
(CTranslate2's `max_decoding_length`, our `max_new_tokens`: 1.5 x its longest source + 10), both
with 2 threads (torch threads, CTranslate2 `intra_threads`). Each line gives sentences/s, sacreBLEU
against the references and the share of outputs identical to nanoformer fp32's, for greedy and
beam 4. Beam search stops as CTranslate2's does (a sentence is done when it has beam_size finished
hypotheses: our `early_stopping=True`) unless --early-stopping says otherwise.

    python benchmarks/ct2_vs_nanoformer.py runs/m30k-20min --out benchmarks/results/ct2_vs_nanoformer.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, write_result  # noqa: E402

import nanoformer  # noqa: E402
from nanoformer.data.text import find_data_file  # noqa: E402
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


def main() -> None:
    import ctranslate2
    import sacrebleu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a trained translation run or checkpoint")
    parser.add_argument("--src", default="multi30k/test_2016_flickr.de")
    parser.add_argument("--ref", default="multi30k/test_2016_flickr.en")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--early-stopping", default="true", choices=["true", "false", "never"],
                        help="our beam search's stopping rule (CTranslate2 stops at beam_size finished hypotheses)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    torch.set_num_threads(args.threads)
    model, tokenizer = nanoformer.load(args.checkpoint)
    texts = find_data_file(args.src).read_text(encoding="utf-8").splitlines()[: args.sentences]
    refs = find_data_file(args.ref).read_text(encoding="utf-8").splitlines()[: args.sentences]
    sources = encode_sources(texts, tokenizer, model.config.max_positions)
    vocab = [tokenizer.id_to_token(i) for i in range(model.config.tgt_vocab_size)]
    index = {token: i for i, token in enumerate(vocab)}
    peaks = matmul_peaks()
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for quantization in ("float32", "int8"):
            folder = Path(tmp) / quantization
            export_ct2(args.checkpoint, folder, None if quantization == "float32" else quantization)
            engines[quantization] = ctranslate2.Translator(str(folder), device="cpu", intra_threads=args.threads,
                                                           inter_threads=1, compute_type=quantization)
        for batch in args.batch:
            groups = batches(sources, batch)
            for beam in (1, 4):
                runs = {"nanoformer_fp32": run_ours(model, sources, groups, beam, early)}
                for quantization, translator in engines.items():
                    name = "ct2_fp32" if quantization == "float32" else "ct2_int8"
                    runs[name] = run_ct2(translator, vocab, index, sources, groups, beam, model.config.max_positions)
                reference = runs["nanoformer_fp32"][0]
                row = {"checkpoint": args.checkpoint, "sentences": len(texts), "batch": batch, "beam": beam,
                       "early_stopping": args.early_stopping if beam > 1 else None,
                       "matmul_peaks_gflops": {k: round(v, 1) for k, v in peaks.items()}, "ct2_version": ctranslate2.__version__}
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

"""Tokenizers for Korean, measured (issue 25, item 4): unigram vs BPE vs WordPiece, and vocabulary size.

Korean writes words (eojeol) as a stem with particles and endings glued on ("학교에" = school + to),
so how a tokenizer cuts them decides how long sequences get and how often a model sees each piece.
Two measurements, on the JHE eval Korean side (the translator's validation split):

* intrinsic (always, seconds): each kind and size trained on the same Korean text ("pairs": the
  Korean side of the translator's ~7k training pairs; "mono": the encoder's Korean corpora of
  configs/ko_en/encoder_ko.toml); tokens per eojeol and per sentence, the share of eojeol kept
  whole, <unk> and byte-fallback shares, how much of the vocabulary the dev set uses, and the
  share of sentences that decode back to themselves exactly;
* extrinsic (`--translate-minutes M`): configs/ko_en.toml trained for M minutes with each kind
  and size (its joint ko+en vocabulary), scored on JHE eval by sacreBLEU and chrF, beam 4.

    python benchmarks/ko_tokenizers.py --out benchmarks/results/ko_tokenizers.jsonl
    python benchmarks/ko_tokenizers.py --translate-minutes 10 --sizes 4000 8000 --out ...

Run the extrinsic part on an otherwise idle machine: each model trains for a fixed time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from nanoformer.data.parallel import KO_EN_SPLITS, read_lines  # noqa: E402
from nanoformer.data.text import data_dir, resolve_text_files  # noqa: E402
from nanoformer.data.units import corpus_texts  # noqa: E402
from nanoformer.recipes.mlm import tokenizer_from_texts  # noqa: E402
from nanoformer.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("unigram", "bpe", "wordpiece")
DEV, = KO_EN_SPLITS["val"]  # the translator's validation split: JHE eval


def korean_texts(source: str) -> list[str]:
    """The Korean training text of `source`: "pairs" (the translator's) or "mono" (the encoder's)."""
    if source == "pairs":
        return [line for stem in KO_EN_SPLITS["train"] for line in read_lines(data_dir() / "ko-en" / f"{stem}.ko")]
    encoder = tomllib.loads((ROOT / "configs" / "ko_en" / "encoder_ko.toml").read_text("utf-8"))
    files = resolve_text_files(encoder["data"]["path"])
    return list(corpus_texts(files))


def train(kind: str, texts: list[str], vocab_size: int) -> Tokenizer:
    """The kind as the recipes train it (WordPiece as the encoder's: BERT's specials, no lower-casing)."""
    if kind == "wordpiece":
        return tokenizer_from_texts(texts, kind, vocab_size, lowercase=False)
    return Tokenizer.train(kind, texts=texts, vocab_size=vocab_size)


def intrinsic(tokenizer: Tokenizer, dev: list[str]) -> dict:
    """Length, coverage and round-trip figures of `tokenizer` on the dev sentences."""
    encoded = tokenizer.encode_batch(dev)
    words = [w for line in dev for w in line.split()]
    word_ids = tokenizer.encode_batch(words)
    unk = tokenizer.special_ids().get("unk")
    byte_ids = {i for i in range(tokenizer.vocab_size) if (tokenizer.id_to_token(i) or "").startswith("<0x")}
    tokens = [t for ids in encoded for t in ids]
    exact = sum(unicodedata.normalize("NFC", tokenizer.decode(ids)) == unicodedata.normalize("NFC", " ".join(line.split()))
                for ids, line in zip(encoded, dev))
    return {
        "tokens_per_eojeol": round(sum(map(len, word_ids)) / len(words), 3),
        "tokens_per_sentence": round(statistics.mean(map(len, encoded)), 2),
        "eojeol_whole": round(sum(len(ids) == 1 for ids in word_ids) / len(words), 4),
        "unk_share": round(sum(t == unk for t in tokens) / len(tokens), 5),
        "byte_share": round(sum(t in byte_ids for t in tokens) / len(tokens), 5),
        "vocab_used": round(len(set(tokens)) / tokenizer.vocab_size, 4),
        "round_trip": round(exact / len(dev), 4),
    }


def translation_scores(kind: str, vocab_size: int, minutes: float, folder: Path) -> dict:
    """configs/ko_en.toml with this tokenizer, trained for `minutes`, scored on JHE eval (beam 4)."""
    from nanoformer.recipes.pipeline import load_pipeline, run_pipeline

    pipeline_file = folder / "pipeline.toml"
    folder.mkdir(parents=True, exist_ok=True)
    sets = [f"data.tokenizer='{kind}'", f"data.vocab_size={vocab_size}", "train.max_steps=1000000"]
    pipeline_file.write_text(
        f'[[stage]]\nname = "translator"\ntrain = "{ROOT / "configs" / "ko_en.toml"}"\nmax_time = "{minutes:g}m"\n'
        f"set = {json.dumps(sets)}\n"
        '[[stage]]\nname = "scores"\nevaluate = "translator"\nsplits = ["val"]\nbeam_size = 4\n', "utf-8")
    run_pipeline(load_pipeline(pipeline_file, folder))
    scores = json.loads((folder / "scores" / "scores.json").read_text("utf-8"))["val"]
    return {key: scores[key] for key in ("bleu", "chrf", "signature", "chrf_signature") if key in scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[4000, 8000, 16000, 32000])
    parser.add_argument("--sources", nargs="+", default=["pairs", "mono"], choices=["pairs", "mono"])
    parser.add_argument("--translate-minutes", type=float, default=0.0,
                        help="also train configs/ko_en.toml this long per kind and size and score it")
    parser.add_argument("--run-dir", default="runs/ko-tokenizers")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if data_dir() is None:
        raise SystemExit("set NANOFORMER_DATA to the folder holding ko-en/ and ko-text/")
    dev = read_lines(data_dir() / "ko-en" / f"{DEV}.ko")
    for source in args.sources:
        texts = korean_texts(source)
        for kind in args.kinds:
            for size in args.sizes:
                start = time.perf_counter()
                tokenizer = train(kind, texts, size)
                result = {"source": source, "train_units": len(texts), "kind": kind, "vocab_size": size,
                          "vocab_trained": tokenizer.vocab_size,  # a small corpus can fill fewer
                          "train_seconds": round(time.perf_counter() - start, 1), "dev": f"ko-en/{DEV}.ko",
                          **intrinsic(tokenizer, dev)}
                if args.translate_minutes and source == "pairs":
                    folder = Path(args.run_dir) / f"{kind}-{size}"
                    result["translation"] = {"minutes": args.translate_minutes, "split": "val (JHE eval)",
                                             "config": "configs/ko_en.toml (joint ko+en vocabulary)",
                                             **translation_scores(kind, size, args.translate_minutes, folder)}
                write_result("ko_tokenizers", result, args.out)


if __name__ == "__main__":
    main()

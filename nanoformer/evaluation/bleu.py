"""Translation quality: sacreBLEU's corpus BLEU and chrF, with their signatures.

BLEU scores depend on how hypotheses and references are tokenized, lower-cased and smoothed, so
a number without its settings cannot be compared with anyone's. sacreBLEU computes BLEU on
detokenized text with a fixed tokenizer ("13a", the WMT standard) and prints a *signature*
recording every setting (e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`);
we report it with every score. chrF (character n-gram F-score) is reported beside it: it is
kinder to morphologically rich languages such as Korean and German.

Tokenized BLEU, as many tutorials report it, is computed on the tokenizer's pieces and is not
comparable with these numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanoformer.errors import UserError

# sacreBLEU tokenizers for target languages whose words are not separated by spaces.
TOKENIZE_FOR_TARGET = {"zh": "zh", "ja": "char", "th": "char"}


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise UserError("BLEU and chrF need sacrebleu; install it with `pip install 'nanoformer[eval]'`") from None
    return sacrebleu


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> dict[str, Any]:
    """Corpus BLEU and chrF of line-aligned hypotheses and references, with signatures."""
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} translations but {len(references)} references; they must be line-aligned")
    if not references:
        raise UserError("no sentences to score; give at least one source and reference line")
    sacrebleu = _sacrebleu()
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    chrf = sacrebleu.metrics.CHRF()
    hyps, refs = list(hypotheses), [list(references)]
    b = bleu.corpus_score(hyps, refs)
    c = chrf.corpus_score(hyps, refs)
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(b),  # precisions, brevity penalty, lengths
    }


def evaluate_translations(
    model,
    tokenizer,
    sources: Sequence[str],
    references: Sequence[str],
    source_tokenizer=None,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    batch_size: int = 32,
    tokenize: str = "13a",
    progress: bool = False,
    where=None,
    **decode_options,
) -> tuple[dict[str, Any], list[str]]:
    """Translate `sources`, score against `references`; returns (scores with timing, translations)."""
    from nanoformer.generation.translation import translate_texts

    if len(sources) != len(references):
        raise UserError(f"{len(sources)} source lines but {len(references)} reference lines; they must be line-aligned")
    start = time.perf_counter()
    hypotheses = translate_texts(model, tokenizer, sources, source_tokenizer=source_tokenizer, beam_size=beam_size,
                                 length_penalty=length_penalty, batch_size=batch_size, progress=progress, where=where,
                                 **decode_options)
    seconds = time.perf_counter() - start
    scores = corpus_scores(hypotheses, references, tokenize=tokenize)
    scores.update({
        "sentences": len(sources),
        "beam_size": beam_size,
        "length_penalty": length_penalty,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(sources) / max(seconds, 1e-9), 2),
    })
    return scores, hypotheses


def read_lines_for_scoring(path: str | Path) -> list[str]:
    """A file's lines (split on "\\n" only, like the corpus loader); an empty file has none."""
    from nanoformer.data.parallel import read_lines
    from nanoformer.data.text import find_data_file

    path = find_data_file(path)
    if path.is_file() and path.stat().st_size == 0:
        return []
    return read_lines(path)

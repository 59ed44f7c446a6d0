"""Back-translated pairs mixed into a translator's training data, tagged (Caswell et al. 2019).

Back-translation (Sennrich, Haddow & Birch 2016) turns monolingual *target*-language text into
training pairs: a reverse model (target → source) translates it, and the pair (synthetic source,
real target) teaches the forward model to write fluent target text. Tagged Back-Translation puts
a tag token in front of every synthetic source, so the model can tell translationese input from
real input and need not imitate it; real sources, at training and at inference, carry no tag.

In a translation config:

```toml
[data]
synthetic = "runs/ko-en/bt/mono"   # mono.ko (synthetic sources) and mono.en (real targets), or a .tsv
synthetic_tag = "<bt>"             # "" for untagged back-translation
synthetic_ratio = 1.0              # synthetic pairs per real pair in the training mix
```

The mix keeps the ratio by upsampling the real pairs when the synthetic ones outnumber them (as
Edunov et al. 2018 do), and by using a seeded subset of the synthetic ones otherwise.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

from nanoformer.data.parallel import find_path
from nanoformer.errors import UserError

IdPairs = tuple[list[list[int]], list[list[int]]]


def synthetic_files(stem: str, src_lang: str, tgt_lang: str, base_dir: Path | None) -> tuple[Path, Path | None]:
    """The synthetic corpus `stem` names: STEM.SRC + STEM.TGT (line-aligned), or one TSV file."""
    path = Path(stem).expanduser()
    if path.suffix == ".tsv":
        return find_path(path, base_dir), None
    src = path.with_name(f"{path.name}.{src_lang}")
    tgt = path.with_name(f"{path.name}.{tgt_lang}")
    try:
        return find_path(src, base_dir), find_path(tgt, base_dir)
    except UserError:
        raise UserError(f"[data] synthetic = {stem!r}: expected {src} and {tgt} (line-aligned: synthetic "
                        f"{src_lang} sources and the real {tgt_lang} text they were translated from), or a .tsv "
                        "file; back-translate first (nanoformer translate REVERSE_RUN --input mono."
                        f"{tgt_lang} --output {src})") from None


@dataclass
class Mix:
    """How the real and synthetic pairs were combined: for the run's record and its log line."""

    real: int
    real_copies: int
    synthetic: int
    synthetic_available: int
    tag: str
    tag_id: int | None

    @property
    def ratio(self) -> float:
        return self.synthetic / max(1, self.real * self.real_copies)

    def describe(self) -> str:
        tag = f"tagged {self.tag!r} (id {self.tag_id})" if self.tag_id is not None else "untagged"
        copies = f" x {self.real_copies}" if self.real_copies > 1 else ""
        return (f"training mix: {self.real:,} real pairs{copies} + {self.synthetic:,} back-translated "
                f"({tag}, of {self.synthetic_available:,}): {self.ratio:.2f} synthetic per real pair")

    def to_json(self) -> dict:
        return {"real": self.real, "real_copies": self.real_copies, "synthetic": self.synthetic,
                "synthetic_available": self.synthetic_available, "tag": self.tag, "tag_id": self.tag_id,
                "ratio": round(self.ratio, 4)}


def mix(real: IdPairs, synthetic: IdPairs, ratio: float, tag_id: int | None, tag: str, seed: int) -> tuple[IdPairs, Mix]:
    """The training pairs: real ones (upsampled if need be) and tagged synthetic ones at `ratio`."""
    n_real, n_synth = len(real[0]), len(synthetic[0])
    wanted = ratio * n_real
    copies = max(1, round(n_synth / wanted)) if wanted > 0 else 1
    take = min(n_synth, round(wanted * copies))
    if take < round(wanted * copies):
        warnings.warn(f"[data] synthetic_ratio = {ratio}: only {n_synth:,} back-translated pairs for {n_real:,} "
                      f"real ones, so the mix has {n_synth / max(1, n_real):.2f} synthetic per real pair; "
                      "back-translate more text or lower synthetic_ratio", stacklevel=2)
    chosen = sorted(random.Random(seed).sample(range(n_synth), take)) if take < n_synth else range(n_synth)
    prefix = [tag_id] if tag_id is not None else []
    src = [list(s) for s in real[0]] * copies + [prefix + list(synthetic[0][i]) for i in chosen]
    tgt = [list(t) for t in real[1]] * copies + [list(synthetic[1][i]) for i in chosen]
    return (src, tgt), Mix(n_real, copies, take, n_synth, tag, tag_id)

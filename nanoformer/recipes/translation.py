"""Translation: the encoder-decoder Transformer trained on sentence pairs, the paper's recipe.

sentence pairs (checked, see `data.parallel`) → a joint BPE/unigram tokenizer over both
languages (trained on the training pairs, saved with the run) → length filters → batches of
`max_tokens` tokens (`data.batching`) → Seq2SeqTransformer → label-smoothed cross-entropy on the
teacher-forced targets. With `[data] bpe_dropout = p` the training text is segmented anew each
epoch (BPE-dropout, `data.bpe_dropout`); validation and test text never are.

The paper's recipe is what the shipped configs set (configs/multi30k_*.toml): Adam with
β = (0.9, 0.98), ε = 1e-9 and no weight decay, the Noam schedule (linear warm-up, then 1/√step),
label smoothing 0.1, dropout 0.1. With a joint vocabulary (the default) the source and target
embeddings and the output projection are one matrix (the paper's three-way tying); with
separate vocabularies the source tokenizer is saved as `source_tokenizer.json` beside
`tokenizer.json` (the target's).

Validation loss is plain cross-entropy (no smoothing), so it reads as log-perplexity.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.data.batching import TranslationBatches, fixed_batches
from nanoformer.data.bpe_dropout import BpeDropoutText
from nanoformer.data.parallel import (
    ParallelText,
    default_test_splits,
    filter_pairs,
    get_split,
    read_split,
    resolve_splits,
)
from nanoformer.errors import UserError
from nanoformer.layers.losses import IGNORE_INDEX, rdrop_consistency
from nanoformer.models import Seq2SeqTransformer
from nanoformer.recipes.budget import size_for_budget
from nanoformer.run_config import RunConfig
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.contracts import FitResult
from nanoformer.training.distributed import dist_info_from_env
from nanoformer.training.trainer import Trainer

SOURCE_TOKENIZER_FILE = "source_tokenizer.json"


class TokenizerPair:
    """Source and target tokenizers of a model with separate vocabularies, saved as two files."""

    def __init__(self, source: Tokenizer, target: Tokenizer) -> None:
        self.source, self.target = source, target

    def save(self, folder: str | os.PathLike) -> Path:
        self.source.save(Path(folder) / SOURCE_TOKENIZER_FILE)
        return self.target.save(folder)


def load_source_tokenizer(folder: str | os.PathLike, target: Tokenizer) -> Tokenizer:
    """The tokenizer that encodes sources for the checkpoint in `folder` (the target's if joint)."""
    path = Path(folder) / SOURCE_TOKENIZER_FILE
    return Tokenizer.load(path) if path.is_file() else target


class TranslationLoss:
    """loss(model, batch): smoothed cross-entropy in training, plain cross-entropy in eval mode.

    With `rdrop` > 0 (R-Drop, Liang et al. 2021) a training batch runs twice, stacked into one
    forward so that the copies get independent dropout masks, and the loss adds rdrop x the mean
    of KL(p||q) and KL(q||p) per target token. The paper's alpha (its loss sums both
    cross-entropies) is 2 x rdrop. It regularises a small corpus and doubles the cost of a step,
    so it can start late: once `progress` (set by the trainer) reaches `rdrop_from`.
    """

    def __init__(self, label_smoothing: float, rdrop: float = 0.0, rdrop_from: float = 0.0) -> None:
        self.label_smoothing, self.rdrop, self.rdrop_from = label_smoothing, rdrop, rdrop_from
        self.progress = 0.0  # the fraction of the training budget used (Trainer: before each step)

    def set_progress(self, fraction: float) -> None:
        self.progress = fraction

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        smoothing = self.label_smoothing if model.training else 0.0
        if self.rdrop and model.training and self.progress >= self.rdrop_from:
            return self._rdrop(model, batch, smoothing)
        # No target padding mask: the causal mask already keeps real tokens from seeing the
        # right-padding, whose own outputs are ignored by the loss (labels -100).
        return model(batch["src_ids"], batch["tgt_in"], src_padding_mask=batch.get("src_mask"),
                     targets=batch["labels"], label_smoothing=smoothing)

    def _rdrop(self, model: nn.Module, batch: dict[str, Tensor], label_smoothing: float) -> Tensor:
        twice = {name: torch.cat([value, value]) for name, value in batch.items() if value is not None}
        # Through model(...) (the trainer may hand us a DDP wrapper): logits (2B, T, V).
        logits = model(twice["src_ids"], twice["tgt_in"], src_padding_mask=twice.get("src_mask"))
        counted = twice["labels"] != IGNORE_INDEX
        # Boolean indexing keeps row-major order and both copies count the same positions, so the
        # first half of the rows is the first copy's tokens and the second half the second's.
        logits = logits[counted].float()
        ce = F.cross_entropy(logits, twice["labels"][counted], label_smoothing=label_smoothing)
        return ce + self.rdrop * rdrop_consistency(logits)


def train_tokenizers(data, train: ParallelText) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers; one shared object when the vocabulary is joint."""
    if data.joint_vocab:
        joint = _train_tokenizer(data, train.src + train.tgt)
        return joint, joint
    return _train_tokenizer(data, train.src), _train_tokenizer(data, train.tgt)


def _train_tokenizer(data, texts: list[str]) -> Tokenizer:
    return Tokenizer.train(data.tokenizer, texts=texts, vocab_size=data.vocab_size,
                           prefix_space=data.prefix_space, progress=True)


def part_tokenizers(data, train: ParallelText, warm: dict) -> tuple[Tokenizer, Tokenizer]:
    """(source, target): a warm-started side brings its pre-trained run's tokenizer, the other is trained."""
    if not warm:
        return train_tokenizers(data, train)
    source = Tokenizer.load(warm["init_encoder"]) if "init_encoder" in warm else None
    target = Tokenizer.load(warm["init_decoder"]) if "init_decoder" in warm else None
    if source is None:
        source = _train_tokenizer(data, train.src)
    if target is None:
        target = _train_tokenizer(data, train.tgt)
    return source, target


def add_synthetic_tag(source: Tokenizer, tag: str) -> int:
    try:
        return source.add_tag(tag)
    except UserError:
        raise UserError(f"[data] synthetic_tag = {tag!r} is already a token of the source vocabulary (id "
                        f"{source.token_to_id(tag)}), so tagged and real sources would look alike; choose a string "
                        "the vocabulary lacks, e.g. '<bt>'") from None


def mix_in_synthetic(data, base_dir: Path | None, source: Tokenizer, target: Tokenizer,
                     real: tuple[list[list[int]], list[list[int]]], seed: int):
    """The training ids with the back-translated pairs of [data] synthetic mixed in (tagged)."""
    from nanoformer.data.back_translation import mix, synthetic_files
    from nanoformer.data.parallel import SplitFiles

    files = synthetic_files(data.synthetic, data.src_lang, data.tgt_lang, base_dir)
    # A reverse model may leave a line empty: such pairs are left out with a warning naming them.
    text = read_split(SplitFiles("synthetic", [files]), skip_empty=True)
    tag_id = None
    if data.synthetic_tag:
        tag_id = source.token_to_id(data.synthetic_tag)
        if tag_id is None:
            raise UserError(f"[data] synthetic_tag = {data.synthetic_tag!r} is not in this run's source tokenizer; "
                            "it was trained without synthetic pairs: start a new run folder")
    ids = encode(text, source, target)
    room = data.max_length - (1 if tag_id is not None else 0)  # the tag takes a source position
    keep = filter_pairs(text, *ids, room, data.max_length_ratio, "synthetic")
    ids = ([ids[0][i] for i in keep], [ids[1][i] for i in keep])
    return mix(real, ids, data.synthetic_ratio, tag_id, data.synthetic_tag, seed)


def encode(text: ParallelText, source: Tokenizer, target: Tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    return source.encode_batch(text.src), target.encode_batch(text.tgt)


def bpe_dropout_epochs(text: ParallelText, ids: tuple[list[list[int]], list[list[int]]], source: Tokenizer,
                       target: Tokenizer, p: float, max_length: int, seed: int):
    """`resegment(epoch)` for `TranslationBatches`: both sides of the training pairs with BPE-dropout."""
    start = time.perf_counter()
    src = BpeDropoutText(text.src, ids[0], source, p, max_length, seed=2 * seed)
    tgt = BpeDropoutText(text.tgt, ids[1], target, p, max_length, seed=2 * seed + 1)
    longer = [sum(map(len, side.epoch(0))) / max(1, sum(map(len, side.regular))) for side in (src, tgt)]
    print(f"BPE-dropout p = {p}: {src.distinct_words + tgt.distinct_words:,} distinct words segmented "
          f"{src.variants} ways in {time.perf_counter() - start:.0f} s; an epoch's source / target text is "
          f"{longer[0]:.2f}x / {longer[1]:.2f}x as many tokens", file=sys.stderr)
    return lambda epoch: (src.epoch(epoch), tgt.epoch(epoch))


def train_translation(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                      pause_after_s: float | None = None) -> FitResult:
    import torch

    data = run.data
    run_dir = Path(run_dir)
    base_dir = run.source.parent if run.source else None
    splits = resolve_splits(data, base_dir)
    valid = get_split(splits, data.valid_split, "[data] valid_split")
    tests = default_test_splits(data, splits)
    for name in tests:
        get_split(splits, name, "[data] test_splits")
    train_text = read_split(splits["train"], data.skip_empty)
    val_text = read_split(valid, data.skip_empty)

    world = dist_info_from_env()
    rank, world_size = world.rank, world.world_size
    target_path = run_dir / "tokenizer.json"
    warm = run.extra.get("warm_start", {})
    if resume and target_path.is_file():
        target = Tokenizer.load(target_path)
        source = load_source_tokenizer(run_dir, target)
    else:
        source, target = part_tokenizers(data, train_text, warm)
        if data.synthetic and data.synthetic_tag:
            add_synthetic_tag(source, data.synthetic_tag)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (TokenizerPair(source, target) if source is not target else target).save(run_dir)

    if run.model.max_positions < data.max_length + 1:
        raise UserError(f"[data] max_length = {data.max_length} needs [model] max_positions >= {data.max_length + 1} "
                        f"(a sentence plus its bos/eos token), but it is {run.model.max_positions}; raise "
                        "max_positions or lower max_length")
    train_ids = encode(train_text, source, target)
    keep = filter_pairs(train_text, *train_ids, data.max_length, data.max_length_ratio, "train")
    train_ids = ([train_ids[0][i] for i in keep], [train_ids[1][i] for i in keep])
    mixed = None
    if data.synthetic:
        train_ids, mixed = mix_in_synthetic(data, base_dir, source, target, train_ids, run.train.seed)
        print(mixed.describe(), file=sys.stderr)
    val_ids = encode(val_text, source, target)
    val_keep = filter_pairs(val_text, *val_ids, run.model.max_positions - 1, None, data.valid_split)
    val_ids = ([val_ids[0][i] for i in val_keep], [val_ids[1][i] for i in val_keep])
    val_batches = len(fixed_batches([len(s) + 1 for s in val_ids[0]], [len(t) + 1 for t in val_ids[1]],
                                    data.max_tokens))
    run = size_for_budget(run, run_dir, source.vocab_size, resume=resume, val_batches=val_batches)
    data = run.data  # size = "auto" may set max_tokens

    specials = target.special_ids()
    joint = source is target
    model_config = run.model.replace(
        vocab_size=source.vocab_size,
        target_vocab_size=None if joint else target.vocab_size,
        share_embeddings=joint,  # one vocabulary, one embedding matrix for both sides
        pad_id=specials["pad"], unk_id=specials["unk"], bos_id=specials["bos"], eos_id=specials["eos"],
        decoder_start_id=None,
    )
    if source.special_ids() != specials:
        parts = " and ".join(f"{role} {folder}" for role, folder in warm.items() if role.startswith("init_"))
        raise UserError(f"the source and target tokenizers{' of ' + parts if parts else ''} disagree on special-token "
                        "ids; retrain them with nanoformer, which gives every tokenizer the same special ids")
    resegment = None
    if data.bpe_dropout:
        resegment = bpe_dropout_epochs(train_text.subset(keep), train_ids, source, target, data.bpe_dropout,
                                       data.max_length, run.train.seed)
    batches = TranslationBatches(train_ids, val_ids, data.max_tokens, specials["pad"], specials["bos"], specials["eos"],
                                 seed=run.train.seed, rank=rank, world_size=world_size, resegment=resegment)
    torch.manual_seed(run.train.seed)  # the same config gives the same initial weights
    model = Seq2SeqTransformer(model_config)
    extra = {"warm_start": dict(warm)} if warm else {}
    if warm and not resume:  # a resumed run has its weights in its checkpoint
        from nanoformer.training.warm_start import warm_start

        copied = warm_start(model, warm)
        extra["warm_start"]["tensors_copied"] = {role: len(names) for role, names in copied.items()}
    data_record = {
        **run.to_dict()["data"],
        "files": {name: split.to_json() for name, split in splits.items()},
        "test_splits_resolved": tests,
        "train_pairs": len(train_ids[0]),
        "val_pairs": len(val_ids[0]),
        **({"synthetic_mix": mixed.to_json()} if mixed is not None else {}),
    }
    trainer = Trainer(
        model,
        TranslationLoss(run.train.label_smoothing, run.train.rdrop, run.train.rdrop_from),
        batches,
        run.train,
        model_config,
        run_dir,
        tokenizer=target if joint else TokenizerPair(source, target),
        extra_config={**extra, "data": data_record},
        resume=resume,
        progress=progress,
    )
    return trainer.fit(pause_after_s=pause_after_s)


def translation_scores(model_dir: str | Path, splits: list[str] | None = None, beam_size: int = 4,
                       batch_size: int = 32, progress: bool = False, where: str = "evaluate") -> dict[str, dict]:
    """split -> sacreBLEU and chrF with signatures of a translator on the splits its config records
    (default: its validation split); `where` names the caller in the error for a split it lacks."""
    from nanoformer.api import load
    from nanoformer.data.parallel import SplitFiles
    from nanoformer.evaluation.bleu import TOKENIZE_FOR_TARGET, evaluate_translations
    from nanoformer.training.checkpoint import read_config, resolve_checkpoint

    folder = resolve_checkpoint(model_dir)
    model, tokenizer = load(folder)
    data = read_config(folder).get("data", {})
    files = data.get("files") or {}
    scores = {}
    for split in splits or [data.get("valid_split", "val")]:
        if split not in files:
            raise UserError(f"{where}: no split {split!r} in {folder}'s data; it has {', '.join(sorted(files))}")
        text = read_split(SplitFiles.from_json(split, files[split]), skip_empty=bool(data.get("skip_empty")))
        result, _ = evaluate_translations(
            model, tokenizer, text.src, text.tgt, source_tokenizer=load_source_tokenizer(folder, tokenizer),
            beam_size=beam_size, batch_size=batch_size, tokenize=TOKENIZE_FOR_TARGET.get(data.get("tgt_lang"), "13a"),
            progress=progress, where=text.where)
        scores[split] = {k: v for k, v in result.items() if k != "bleu_detail"}
    return scores

"""How long one training step of each rung takes on this machine, measured in a few seconds.

A step here is what the trainer does: forward with the loss, backward, gradient clipping, AdamW
and zeroing the gradients, on random tokens of the rung's batch shape (the time of a step does
not depend on which tokens it sees). A translation rung's batch is max_tokens split into
PROBE_SENTENCE_TOKENS-token sentences on both sides: its padded shape, which is what is computed.
An encoder rung's batch is masked as pre-training masks (MASK_FRACTION of the positions), since
its MLM head runs on the masked positions alone.
The first step is a warm-up (allocations, oneDNN's plans) and is not counted; the median of the
next ones is. The whole probe takes about 10 s on a 2-core CPU, most of it in the largest rung
the budget could afford.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nanoformer.models import DecoderModel, EncoderModel, Seq2SeqTransformer
from nanoformer.recipes.ladders import Rung, TranslationRung
from nanoformer.run_config import RunConfig
from nanoformer.training.device import select_device
from nanoformer.training.optim import build_optimizer


PROBE_SENTENCE_TOKENS = 32  # a translation batch's longest side, about Multi30k's (captions of 10-30 tokens)
MASK_FRACTION = 0.15  # BERT's share of masked positions ([data] mask_prob's default)


def probe_step_times(run: RunConfig, rungs: Sequence[Rung | TranslationRung], vocab_size: int, steps: int = 2,
                     stop_after_s: float | None = None) -> dict[str, float]:
    """Seconds per training step of each rung, smallest first.

    stop_after_s: stop measuring once a rung's step takes longer (every larger rung is slower
    still, and a budget of `stop_after_s` x MIN_STEPS cannot afford it); a rung whose warm-up
    step alone takes longer is not timed further (its warm-up time stands for its step time).
    """
    device = select_device(run.train.device)
    times: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    try:
        for rung in rungs:
            model, loss = _model_and_loss(run, rung, vocab_size, generator, device)
            optimizer = build_optimizer(model, run.train)
            if not times:  # the process's first steps also pay one-time costs (thread pools, oneDNN's set-up)
                _timed_step(model, optimizer, loss, run.train.grad_clip)
            warmup = _timed_step(model, optimizer, loss, run.train.grad_clip)
            if stop_after_s is not None and warmup > stop_after_s:  # too slow already: no need to time it closely
                times[rung.name] = warmup
                break
            seconds = [_timed_step(model, optimizer, loss, run.train.grad_clip) for _ in range(steps)]
            times[rung.name] = statistics.median(seconds)
            del model, optimizer
            if stop_after_s is not None and times[rung.name] > stop_after_s:
                break
    finally:
        torch.random.set_rng_state(state)  # the run's initial weights do not depend on the probe
    return times


def _model_and_loss(run: RunConfig, rung: Rung | TranslationRung, vocab_size: int, generator: torch.Generator,
                    device: torch.device) -> tuple[nn.Module, Callable[[], Tensor]]:
    """The rung's model and its loss on one random batch of the rung's shape."""
    shape = dict(vocab_size=vocab_size, d_model=rung.d_model, n_layers=rung.n_layers, n_heads=rung.n_heads,
                 d_ff=rung.d_ff)
    if isinstance(rung, TranslationRung):
        model = Seq2SeqTransformer(run.model.replace(**shape, target_vocab_size=None)).to(device)
        rows = max(1, rung.max_tokens // PROBE_SENTENCE_TOKENS)
        src, tgt = (torch.randint(4, vocab_size, (rows, PROBE_SENTENCE_TOKENS + 1), generator=generator).to(device)
                    for _ in range(2))
        return model, lambda: model(src[:, 1:], tgt[:, :-1], targets=tgt[:, 1:])
    if run.model.arch == "encoder":
        # The preset's special ids (BERT's 100-103) may lie beyond a small tokenizer's vocabulary;
        # the tokens here are random, so only the padding id matters.
        specials = dict(pad_id=0, unk_id=None, bos_id=None, eos_id=None, mask_id=None, cls_id=None, sep_id=None)
        model = EncoderModel(run.model.replace(**shape, **specials, max_positions=rung.context)).to(device)
        ids = torch.randint(4, vocab_size, (rung.batch_size, rung.context), generator=generator).to(device)
        masked = (torch.rand(ids.shape, generator=generator) < MASK_FRACTION).to(device)
        types = torch.zeros_like(ids) if model.config.type_vocab_size else None
        # recipes.mlm.mlm_loss's computation (that module sizes through budget.py, which imports this one)
        return model, lambda: F.cross_entropy(model(ids, torch.ones_like(ids), types, masked_positions=masked).float(),
                                              ids[masked])
    model = DecoderModel(run.model.replace(**shape, max_positions=rung.context)).to(device)
    ids = torch.randint(vocab_size, (rung.batch_size, rung.context + 1), generator=generator).to(device)
    return model, lambda: model(ids[:, :-1], targets=ids[:, 1:])


def _timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_of_batch: Callable[[], Tensor],
                grad_clip: float | None) -> float:
    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = loss_of_batch()
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start

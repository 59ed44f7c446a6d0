"""Continuous batching of beam search: sentences that join a running search between its steps
(generation/beam_group.py) get exactly what they get searched alone.

The model is test_beam_search's, whose eos grows likely with the position, so hypotheses end at
many lengths; the sentences join at several steps, so the group holds left-padded rows, sources
of several widths, and sentences leaving while others still run (the cache then forgets the
positions no row reads).
"""

from __future__ import annotations

import pytest
import torch

from nanoformer.generation.beam import beam_search, length_penalty_fn, search_rule
from nanoformer.generation.beam_group import BeamGroup
from nanoformer.generation.limits import length_limits
from nanoformer.layers.cache import KVCache
from tests.test_beam_search import MAX_NEW, PAD, SETTINGS, generated_lengths, marian_like, padded_sources

LENGTHS = (7, 3, 9, 5, 4, 8, 2)
JOINS = {0: [0, 1], 2: [2], 3: [3, 4], 6: [5], 9: [6]}  # step -> the sentences that join before it


@pytest.fixture(scope="module")
def model():
    return marian_like()


def sub_batch(src: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    width = int(mask[rows].sum(dim=1).max())
    sub_mask = mask[rows, :width]
    return src[rows, :width], None if bool(sub_mask.all()) else sub_mask


def widen(sequences: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(sequences, (0, width - sequences.shape[1]), value=PAD)


def run_continuously(model, rule, src, mask, joins: dict[int, list[int]], max_new: int, watch: dict,
                     primed: bool = False) -> dict:
    """primed: newcomers join a running group before their first step (BeamGroup.prime), as the server does."""
    results, group = {}, None
    for step in range(200):
        if step in joins:
            rows = joins[step]
            ids, sub_mask = sub_batch(src, mask, rows)
            limits = length_limits(model.config, ids, sub_mask, max_new)
            new = BeamGroup(model, rule, ids, sub_mask, limits, torch.tensor(rows))
            running = group is not None and group.size > 0
            if primed and running:
                new.prime(model)
                watch["primed"] += 1
            else:
                results.update({f.owner: f for f in new.step(model)})  # its first step, alone
            if not running:
                group = new
            else:
                group.merge(new)
        if group is not None and group.size:
            watch["padded"] |= group.tgt_mask is not None
            watch["widths"].add(group.src_width())
            results.update({f.owner: f for f in group.step(model)})
        if step > max(joins) and (group is None or group.size == 0):
            break
    return results


@pytest.mark.parametrize("primed", [False, True], ids=["after-first-step", "primed"])
@pytest.mark.parametrize("fast", [False, True], ids=["modules", "decode-step"])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s['style']}-{s['alpha']}-{s['early_stopping']}")
def test_sentences_joining_a_running_search_get_what_they_get_alone(model, setting, fast, primed, monkeypatch):
    src, mask = padded_sources(seed=3, lengths=LENGTHS)
    k, n = 4, 2
    options = dict(length_penalty=setting["alpha"], length_penalty_style=setting["style"],
                   early_stopping=setting["early_stopping"], bad_ids=setting.get("bad_ids"),
                   force_eos=setting.get("force_eos", False))
    dropped = []
    real_drop = KVCache.drop_front
    monkeypatch.setattr(KVCache, "drop_front", lambda self, count: (dropped.append(count), real_drop(self, count)))
    rule = search_rule(model.config, k, length_penalty_fn(setting["style"], float(setting["alpha"])),
                       setting["early_stopping"], setting["alpha"], setting.get("bad_ids"),
                       setting.get("force_eos", False), n, src.device)
    watch = {"padded": False, "widths": set(), "primed": 0}
    with model.decoding() if fast else torch.no_grad():
        results = run_continuously(model, rule, src, mask, JOINS, MAX_NEW, watch, primed)
    assert sorted(results) == list(range(len(LENGTHS)))
    lengths = set()
    for row, length in enumerate(LENGTHS):
        alone, scores = beam_search(model, src[row : row + 1, :length], beam_size=k, max_new_tokens=MAX_NEW,
                                    num_return_sequences=n, **options)
        got = results[row]
        width = max(got.sequences.shape[1], alone.shape[1])
        assert torch.equal(widen(got.sequences, width), widen(alone, width)), f"sentence {row}"
        assert got.scores.tolist() == pytest.approx(scores.tolist(), abs=5e-5)  # fp32 over other shapes, as test_beam_search
        lengths.update(generated_lengths(alone))
    # What makes the test mean something: rows were left-padded, sources of several widths shared
    # the cross-attention, sentences left while others ran on, and hypotheses ended at many lengths.
    assert watch["padded"] and len(watch["widths"]) >= 2
    assert any(count > 0 for count in dropped)
    assert len(lengths) >= 2
    assert watch["primed"] == (len(JOINS) - 1 if primed else 0)  # every join but the first met a running group


def test_groups_with_other_settings_do_not_merge(model):
    src, mask = padded_sources(seed=3, lengths=(4, 5))
    rules = [search_rule(model.config, k, length_penalty_fn("hf", 1.0), False, 1.0, None, False, 1, src.device)
             for k in (2, 3)]
    groups = []
    for rule, row in zip(rules, (0, 1)):
        ids, sub_mask = sub_batch(src, mask, [row])
        group = BeamGroup(model, rule, ids, sub_mask, length_limits(model.config, ids, sub_mask, MAX_NEW), torch.tensor([row]))
        group.step(model)
        groups.append(group)
    with pytest.raises(ValueError, match="same search settings"):
        groups[0].merge(groups[1])


def test_a_group_merges_only_past_its_first_step_or_primed(model):
    src, mask = padded_sources(seed=3, lengths=(4, 5))
    rule = search_rule(model.config, 3, length_penalty_fn("hf", 1.0), False, 1.0, None, False, 1, src.device)
    groups = []
    for row in (0, 1):
        ids, sub_mask = sub_batch(src, mask, [row])
        groups.append(BeamGroup(model, rule, ids, sub_mask, length_limits(model.config, ids, sub_mask, MAX_NEW),
                                torch.tensor([row])))
    groups[0].step(model)
    with pytest.raises(ValueError, match="past their first step or primed"):
        groups[0].merge(groups[1])
    with pytest.raises(ValueError, match="before its first step"):
        groups[0].prime(model)
    groups[1].prime(model)
    groups[0].merge(groups[1])
    assert groups[0].size == 2 and groups[0].last.shape[0] == 6

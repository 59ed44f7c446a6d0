"""Generation on the KV cache: equal to recomputing everything, batch-invariant, sampling controls.

The models are untrained but not degenerate: at the default init (std 0.02) a tiny model's greedy
output repeats one token whatever the prompt, so a decoder that saw only its previous token would
pass. With init_std = 1.0 the output depends on the whole context, and each equality test first
asserts that dependence (changing the first prompt token, or the source, changes the output).
"""

from __future__ import annotations

import pytest
import torch

from nanoformer.config import ModelConfig
from nanoformer.generation.sampling import generate, left_pad
from nanoformer.generation.sampling import apply_repetition_penalty, choose_next, filter_top_k, filter_top_p
from nanoformer.generation.greedy import greedy_decode
from nanoformer.models import DecoderModel, Seq2SeqTransformer

POSITIONALS = ["learned", "sinusoidal", "rope", "alibi"]


def tiny_decoder(positional: str = "learned", seed: int = 0, **overrides) -> DecoderModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        arch="decoder", vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=160,
        dropout=0.0, positional=positional, pad_id=0, init_std=1.0, **overrides,
    )
    return DecoderModel(config).eval()


def depends_on_the_whole_prompt(model: DecoderModel, prompt: torch.Tensor, steps: int) -> bool:
    """Greedy output that changes with the prompt's first token and is not (nearly) one token repeated."""
    changed = prompt.clone()
    changed[:, 0] = changed[:, 0] % (model.config.vocab_size - 1) + 1
    out, other = generate(model, prompt, steps)[:, prompt.shape[1]:], generate(model, changed, steps)[:, prompt.shape[1]:]
    return all(not torch.equal(out[row], other[row]) and len(set(out[row].tolist())) >= 5
               for row in range(prompt.shape[0]))


def context_sensitive_decoder(positional: str, prompts: list[torch.Tensor], steps: int) -> DecoderModel:
    """The first seed whose model passes `depends_on_the_whole_prompt` for every prompt: a random
    model can fall into a loop of one token, which would prove nothing about the later positions."""
    for seed in range(40):
        model = tiny_decoder(positional, seed=seed)
        if all(depends_on_the_whole_prompt(model, p, steps) for p in prompts):
            return model
    raise AssertionError(f"no seed in 40 gives a {positional} decoder whose output follows its prompt")


def uncached_greedy(model: DecoderModel, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    sequence = prompt
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(sequence)[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_id], dim=1)
    return sequence


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_greedy_equals_uncached_for_100_steps(positional):
    prompt = torch.randint(1, 97, (2, 7))
    model = context_sensitive_decoder(positional, [prompt], 100)
    cached = generate(model, prompt, max_new_tokens=100)
    assert torch.equal(cached, uncached_greedy(model, prompt, 100))


@pytest.mark.parametrize("positional", POSITIONALS)
def test_batch_of_unequal_prompts_equals_each_prompt_alone(positional):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40, 41, 42, 43]]
    model = context_sensitive_decoder(positional, [torch.tensor([p]) for p in prompts], 30)
    ids, mask = left_pad(prompts, pad_id=0)
    batch = generate(model, ids, max_new_tokens=30, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), max_new_tokens=30)
        assert torch.equal(batch[row, ids.shape[1]:], alone[0, len(prompt):])


def test_rows_after_eos_are_filled_with_pad_and_others_continue():
    model = tiny_decoder()
    prompt = torch.randint(1, 97, (3, 5))
    free = generate(model, prompt, max_new_tokens=12)
    eos = int(free[0, 5 + 3])  # the token row 0 produces at its 4th step
    stopped = generate(model, prompt, max_new_tokens=12, eos_id=eos, pad_id=0)
    first = (stopped[0, 5:] == eos).nonzero()[0].item()
    assert (stopped[0, 5 + first + 1 :] == 0).all()
    for row in range(3):  # up to its own eos, each row is what it was without eos handling
        hits = (stopped[row, 5:] == eos).nonzero()
        end = hits[0].item() + 1 if len(hits) else 12
        assert torch.equal(stopped[row, 5 : 5 + end], free[row, 5 : 5 + end])


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    model = tiny_decoder()
    prompt = torch.randint(1, 97, (1, 4))
    run = lambda seed: generate(model, prompt, 30, do_sample=True, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = tiny_decoder()
    prompt = torch.randint(1, 97, (2, 4))
    greedy = generate(model, prompt, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, prompt, 20, do_sample=True, top_k=1, generator=g), greedy)
    assert torch.equal(generate(model, prompt, 20, do_sample=True, top_p=1e-6, generator=g), greedy)


def test_filters_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_top_k(logits, 2)).tolist() == [[True, True, False, False]]
    # Top-p 0.7: 0.5 alone is short of 0.7, 0.5 + 0.3 reaches it: two tokens stay.
    assert torch.isfinite(filter_top_p(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[0]]), 1.0), logits)


def test_greedy_choice_is_argmax_and_temperature_must_be_positive():
    logits = torch.tensor([[0.1, 2.0, 0.3]])
    assert choose_next(logits).tolist() == [1]
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_decoder(), torch.tensor([[1, 2]]), 3, do_sample=True, temperature=0.0)


def test_generation_runs_past_the_context_with_a_sliding_window():
    model = tiny_decoder()  # max_positions 160
    prompt = torch.randint(1, 97, (2, 150))
    out = generate(model, prompt, max_new_tokens=100)
    assert out.shape == (2, 250)
    # While the context holds the whole text nothing changes (token 161 still sees all 160) ...
    assert torch.equal(out[:, :161], uncached_greedy(model, prompt, 11))
    # ... then the cache restarts from the latest half of the context: 80 tokens.
    for t in range(161, 170):
        window = out[:, 81:t]
        assert torch.equal(out[:, t : t + 1], uncached_greedy(model, window, 1)[:, -1:])


def test_prompt_longer_than_positions_is_refused():
    with pytest.raises(ValueError, match="max_positions"):
        generate(tiny_decoder(), torch.randint(1, 97, (1, 170)), max_new_tokens=5)


def test_model_generate_method_uses_the_config_eos():
    model = tiny_decoder(eos_id=3)
    prompt = torch.randint(4, 97, (1, 5))
    assert torch.equal(model.generate(prompt, 10), generate(model, prompt, 10, eos_id=3, pad_id=0))


def tiny_seq2seq(positional: str) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    config = ModelConfig(
        arch="encoder-decoder", vocab_size=61, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=64,
        dropout=0.0, positional=positional, share_embeddings=True, pad_id=0, bos_id=1, eos_id=2, init_std=1.0,
    )
    return Seq2SeqTransformer(config).eval()


@pytest.mark.parametrize("positional", POSITIONALS)
def test_seq2seq_greedy_cached_equals_uncached_and_batch_equals_alone(positional):
    model = tiny_seq2seq(positional)
    src = torch.randint(3, 61, (3, 9))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 6:] = False
    src[1, 6:] = 0
    out = greedy_decode(model, src, mask, max_new_tokens=20)
    # The output follows the source: another first source token changes each row's translation.
    changed = src.clone()
    changed[:, 0] = (changed[:, 0] - 3 + 1) % 58 + 3
    other = greedy_decode(model, changed, mask, max_new_tokens=20)
    for row in range(3):
        assert not torch.equal(out[row], other[row]), "the translation ignores the source's first token"
    assert len({tuple(r.tolist()) for r in out}) == 3
    with torch.no_grad():
        for row in range(3):
            length = int(mask[row].sum())
            alone = greedy_decode(model, src[row : row + 1, :length], None, max_new_tokens=20)[0]
            # recompute without a cache, step by step
            tgt = torch.tensor([[1]])
            for _ in range(20):
                nxt = model(src[row : row + 1, :length], tgt)[:, -1].argmax(-1, keepdim=True)
                tgt = torch.cat([tgt, nxt], 1)
                if nxt.item() == 2:
                    break
            n = tgt.shape[1]
            assert torch.equal(alone[:n], tgt[0])
            assert torch.equal(out[row, :n], tgt[0])

"""Beam search for the encoder-decoder model: beam 1 is greedy, the cached search equals a search
that recomputes the whole target every step, a batch equals its sentences alone, finished sentences
leave the batch, and a random-init Marian gives Hugging Face's `generate(num_beams=4)` output.

Random models either stop at once or never; to get hypotheses of many lengths, `eos_rises` makes
the eos logit grow with the target position (a least-squares read-out of the position from the
decoder's last hidden states, written into the eos row of the tied embedding and its bias).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nanoformer.config import ModelConfig
from nanoformer.generation import beam_group as beam_module
from nanoformer.generation.beam import GenerationOutput, beam_search, best_continuations
from nanoformer.generation.greedy import greedy_decode
from nanoformer.models import Seq2SeqTransformer

VOCAB, PAD, EOS = 50, 49, 0
MAX_NEW = 12


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "embed_positions" not in name:
            p.add_(torch.randn(p.shape, generator=g) * scale)


@torch.no_grad()
def position_readout(model: Seq2SeqTransformer, seed: int = 0) -> torch.Tensor:
    """w (D + 1) with hidden · w[:-1] + w[-1] ≈ the target position, fitted on random inputs."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.tgt_vocab_size
    src = torch.randint(1, vocab - 1, (32, 8), generator=g)
    tgt = torch.randint(1, vocab - 1, (32, 20), generator=g)
    tgt[:, 0] = model.config.start_id
    hidden = model.run_decoder(tgt, model.encode(src)).hidden.reshape(-1, model.config.d_model)
    positions = torch.arange(1, 21, dtype=torch.float).repeat(32)
    x = torch.cat([hidden, torch.ones(len(hidden), 1)], dim=1)
    return torch.linalg.lstsq(x, positions[:, None]).solution[:, 0]


@torch.no_grad()
def eos_rises(model: Seq2SeqTransformer, around: float = 5.0) -> Seq2SeqTransformer:
    """Make eos likely from about position `around` on (the model must tie lm_head to the embeddings)."""
    model.eval()  # the readout is fitted on the model as it will decode: no dropout
    w = position_readout(model)
    model.lm_head.weight[EOS] = w[:-1]
    model.lm_head.bias[EOS] = w[-1] - around
    return model.eval()


def marian_like(seed: int = 0, positional: str = "sinusoidal") -> Seq2SeqTransformer:
    config = ModelConfig.from_preset(
        "marian-base", vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_positions=40,
        pad_id=PAD, eos_id=EOS, unk_id=None, decoder_start_id=PAD, positional=positional,
    )
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(config)
    jitter(model, seed)
    return eos_rises(model)


def padded_sources(seed: int, lengths=(7, 3, 9, 5), vocab: int = VOCAB, pad: int = PAD):
    """Right-padded sources ending in eos (as Marian's tokenizer makes them) and their masks."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    src = torch.randint(1, vocab - 1, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, n - 1] = EOS
        src[row, n:] = pad
        mask[row, :n] = 1
    return src, mask


def generated_lengths(sequences: torch.Tensor) -> list[int]:
    """Generated tokens per row, eos included (the start token is not counted)."""
    out = []
    for row in sequences[:, 1:].tolist():
        out.append(row.index(EOS) + 1 if EOS in row else len(row))
    return out


@pytest.fixture(scope="module")
def model():
    return marian_like()


# -- a reference beam search that recomputes the whole target every step, one sentence at a time --


@torch.no_grad()
def reference_beam_search(model, src, k, max_new, alpha=1.0, style="hf", early_stopping=False, bad_ids=(), force_eos=False):
    """Returns [(score, tokens)] of one unpadded source (1, S), best first: plain Python lists,
    the full decoder re-run on every prefix (no cache), the rules described in beam.py."""
    penalty = (lambda n: n**alpha) if style == "hf" else (lambda n: ((5 + n) / 6) ** alpha)
    running = [([model.config.start_id], 0.0)]
    finished: list[tuple[float, list[int]]] = []
    for t in range(1, max_new + 1):
        tgt = torch.tensor([tokens for tokens, _ in running])
        logp = F.log_softmax(model(src.expand(len(running), -1), tgt)[:, -1].float(), dim=-1)
        logp[:, list(bad_ids)] = float("-inf")
        if force_eos and t == max_new:
            logp[:] = float("-inf")
            logp[:, EOS] = 0.0
        total = logp + torch.tensor([score for _, score in running])[:, None]
        values, index = total.flatten().topk(2 * k)
        next_running = []
        for rank, (value, i) in enumerate(zip(values.tolist(), index.tolist())):
            beam, token = divmod(i, logp.shape[1])
            tokens = running[beam][0] + [token]
            if token == EOS or t == max_new:
                if rank < k and math.isfinite(value):
                    finished.append((value / penalty(t), tokens))
            elif len(next_running) < k:
                next_running.append((tokens, value))
        finished = sorted(finished, key=lambda f: -f[0])[:k]
        running = next_running
        if t == max_new:
            break
        if len(finished) == k:
            if early_stopping is True:
                break
            best_length = max_new if early_stopping == "never" and alpha > 0 else t
            if running[0][1] / penalty(best_length) <= finished[-1][0]:
                break
    return finished


SETTINGS = [
    dict(alpha=1.0, style="hf", early_stopping=False),
    dict(alpha=0.0, style="hf", early_stopping=True),
    dict(alpha=2.0, style="hf", early_stopping="never"),
    dict(alpha=-0.5, style="hf", early_stopping="never"),
    dict(alpha=0.6, style="gnmt", early_stopping=False, bad_ids=(PAD,), force_eos=True),
]


@pytest.fixture(params=[64, 4], ids=["plain-topk", "chunked-topk"])
def chunk(request, monkeypatch):
    """The test vocabulary (50) is below one chunk of `best_continuations`; chunks of 4 run its chunked path."""
    monkeypatch.setattr(beam_module, "CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s['style']}-{s['alpha']}-{s['early_stopping']}")
def test_cached_batched_search_equals_uncached_reference_one_by_one(model, setting, chunk):
    """Cached == uncached, and a padded batch == its sentences one by one: same hypotheses, same scores."""
    src, mask = padded_sources(seed=1)
    k, n = 4, 3
    sequences, scores = beam_search(
        model, src, mask, beam_size=k, max_new_tokens=MAX_NEW, length_penalty=setting["alpha"],
        length_penalty_style=setting["style"], num_return_sequences=n, early_stopping=setting["early_stopping"],
        bad_ids=setting.get("bad_ids"), force_eos=setting.get("force_eos", False),
    )
    assert sequences.shape[0] == scores.shape[0] == len(src) * n
    for row in range(len(src)):
        alone = src[row : row + 1, : int(mask[row].sum())]
        expected = reference_beam_search(model, alone, k, MAX_NEW, **setting)
        for j, (score, tokens) in enumerate(expected[:n]):
            got = sequences[row * n + j]
            assert got[: len(tokens)].tolist() == tokens
            assert (got[len(tokens) :] == PAD).all()
            # fp32: the reference runs other matrix shapes (whole prefixes, one sentence), and MKL's
            # rounding also varies with buffer alignment; over 12 steps that reaches about 1.5e-5.
            assert scores[row * n + j].item() == pytest.approx(score, abs=5e-5)


@pytest.mark.parametrize("vocab,count", [(8000, 8), (8001, 8), (513, 8), (100, 2), (64, 8), (9, 8)])
def test_best_continuations_equal_one_topk_over_all_beams(vocab, count):
    """Chunked selection == torch.topk over beams x vocabulary: same scores, same indices, also with
    banned (-inf) tokens and with rows where only one token is possible (a forced eos)."""
    g = torch.Generator().manual_seed(vocab)
    n, beams = 5, 4
    logp = torch.randn(n * beams, vocab, generator=g).log_softmax(-1)
    logp[:, 1::7] = float("-inf")
    logp[3] = float("-inf")
    logp[3, 2] = 0.0
    run = torch.randn(n, beams, generator=g)
    expected = (logp.view(n, beams, vocab) + run[:, :, None]).view(n, -1).topk(count, dim=1)
    scores, index = best_continuations(logp, run, count)
    finite = expected.values.isfinite()
    assert torch.equal(scores, expected.values)
    assert torch.equal(index[finite], expected.indices[finite])  # -inf entries tie: any order


def test_lengths_vary_so_the_tests_mean_something(model):
    src, mask = padded_sources(seed=1)
    out = model.generate(src, MAX_NEW, mask, beam_size=4, num_return_sequences=4)
    lengths = generated_lengths(out)
    assert len(set(lengths)) >= 4 and min(lengths) < MAX_NEW


# -- beam 1 is greedy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, dict(bad_ids=[PAD, 3], force_eos=True), dict(max_len_a=1.0, max_len_b=1, force_eos=True), dict(max_len_b=4)],
    ids=["plain", "banned-forced", "a-b-forced", "b-only"],
)
def test_beam_one_equals_greedy(model, options):
    src, mask = padded_sources(seed=2, lengths=(7, 3, 9, 5, 1))
    greedy = greedy_decode(model, src, mask, MAX_NEW, **options)
    beam, _ = beam_search(model, src, mask, beam_size=1, max_new_tokens=MAX_NEW, **options)
    assert torch.equal(beam, greedy)
    assert torch.equal(model.generate(src, MAX_NEW, mask, **options), greedy)
    out = model.generate(src, MAX_NEW, mask, return_scores=True, **options)  # scores: through the beam code
    assert torch.equal(out.sequences, greedy)


def test_default_call_returns_a_tensor_and_greedy_is_unchanged(model):
    src, mask = padded_sources(seed=3)
    out = model.generate(src, MAX_NEW, mask)
    assert isinstance(out, torch.Tensor) and out.shape[0] == len(src) and (out[:, 0] == PAD).all()
    assert isinstance(model.generate(src, MAX_NEW, mask, beam_size=4), torch.Tensor)


# -- n-best, length penalty, limits, banned tokens -------------------------------------------------


@torch.no_grad()
def log_prob(model, src, mask, sequences):
    """Sum of the log-probs of each hypothesis' generated tokens (eos included), by a full forward."""
    logp = F.log_softmax(model(src, sequences[:, :-1], src_padding_mask=mask), dim=-1)
    picked = logp.gather(2, sequences[:, 1:, None])[:, :, 0]
    lengths = torch.tensor(generated_lengths(sequences))
    keep = torch.arange(picked.shape[1])[None, :] < lengths[:, None]
    return (picked * keep).sum(dim=1), lengths


@pytest.mark.parametrize("style,alpha", [("hf", 1.0), ("hf", 0.0), ("gnmt", 0.6), ("gnmt", 2.0)])
def test_nbest_is_ordered_and_scores_are_penalised_log_probs(model, style, alpha):
    src, mask = padded_sources(seed=4)
    n = 4
    out = model.generate(src, MAX_NEW, mask, beam_size=4, num_return_sequences=n, length_penalty=alpha,
                         length_penalty_style=style, return_scores=True)
    assert isinstance(out, GenerationOutput) and out.cross_attentions is None
    scores = out.scores.view(len(src), n)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    best = model.generate(src, MAX_NEW, mask, beam_size=4, length_penalty=alpha, length_penalty_style=style)
    firsts = out.sequences.view(len(src), n, -1)[:, 0]
    assert torch.equal(best, firsts[:, : best.shape[1]]) and (firsts[:, best.shape[1] :] == PAD).all()
    # the scores are the hypotheses' log-probs over the length penalty
    rep = src.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    total, lengths = log_prob(model, *rep, out.sequences)
    norm = lengths.float() ** alpha if style == "hf" else ((5 + lengths.float()) / 6) ** alpha
    assert torch.allclose(out.scores, total / norm, atol=1e-4)


def test_length_penalty_favours_long_or_short_hypotheses(model):
    src, mask = padded_sources(seed=5, lengths=(7, 3, 9, 5, 8, 6))
    mean_length = {}
    for alpha in (-2.0, 0.0, 3.0):
        out = model.generate(src, MAX_NEW, mask, beam_size=6, length_penalty=alpha, early_stopping="never")
        mean_length[alpha] = sum(generated_lengths(out)) / len(src)
    assert mean_length[-2.0] <= mean_length[0.0] <= mean_length[3.0]
    assert mean_length[-2.0] < mean_length[3.0]


def test_length_limits_banned_tokens_and_forced_eos(model):
    src, mask = padded_sources(seed=6, lengths=(7, 3, 9, 5))
    a, b = 0.5, 1
    common = dict(src_padding_mask=mask, max_len_a=a, max_len_b=b, bad_ids=[PAD, 5, 7], force_eos=True)
    for k in (1, 3):
        out = model.generate(src, 30, beam_size=k, num_return_sequences=k, **common)
        rows = out[:, 1:].tolist()
        for i, (row, length) in enumerate(zip(rows, generated_lengths(out))):
            limit = math.floor(a * int(mask[i // k].sum()) + b)
            assert length <= limit
            assert row[length - 1] == EOS  # every hypothesis ends with eos: forced at the limit
            assert not {PAD, 5, 7} & set(row[: length - 1])
    # max_new_tokens caps the a + b·n limit
    out = model.generate(src, 2, mask, beam_size=3, max_len_a=0.0, max_len_b=10)
    assert out.shape[1] <= 3


# -- finished sentences leave the batch; cross K/V once per sentence -------------------------------


def test_finished_sentences_leave_the_batch_and_cross_kv_is_computed_once(model):
    src, mask = padded_sources(seed=7, lengths=(7, 3, 9, 5, 2, 8))
    rows_per_step: list[int] = []
    kv_rows: list[int] = []
    handles = [model.lm_head.register_forward_hook(lambda m, args, out: rows_per_step.append(args[0].shape[0]))]
    handles += [
        layer.cross_attn.kv_proj.register_forward_hook(lambda m, args, out: kv_rows.append(args[0].shape[0]))
        for layer in model.decoder.layers
    ]
    try:
        k = 4
        out = model.generate(src, MAX_NEW, mask, beam_size=k, force_eos=True)
    finally:
        for h in handles:
            h.remove()
    # cross-attention K/V: once per layer, on one row per sentence (then copied to the beams)
    assert kv_rows == [len(src)] * len(model.decoder.layers)
    assert rows_per_step[0] == len(src)
    assert all(r % k == 0 for r in rows_per_step[1:])
    assert rows_per_step[1:] == sorted(rows_per_step[1:], reverse=True)
    assert rows_per_step[-1] < len(src) * k  # some sentences were done before the last step
    assert len(rows_per_step) <= MAX_NEW and out.shape[1] <= MAX_NEW + 1


# -- cross-attention weights ---------------------------------------------------------------------


@torch.no_grad()
def test_cross_attentions_sum_to_one_and_match_the_cached_math_path(model):
    src, mask = padded_sources(seed=8)
    out = model.generate(src, MAX_NEW, mask, beam_size=4, num_return_sequences=2, return_attentions=True)
    attn = out.cross_attentions
    assert attn.shape == (out.sequences.shape[0], out.sequences.shape[1] - 1, src.shape[1])
    lengths = generated_lengths(out.sequences)
    rep_mask = mask.repeat_interleave(2, 0)
    for row, length in enumerate(lengths):
        sums = attn[row, :length].sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
        assert (attn[row, length:] == 0).all()
        assert (attn[row, :, rep_mask[row] == 0] == 0).all()  # padding gets no attention
    # the same weights, step by step on the KV cache through the explicit path, one hypothesis alone
    for row in (0, 3, 5):
        s = row // 2
        alone = src[s : s + 1, : int(mask[s].sum())]
        memory = model.encode(alone)
        cache = model.new_cache()
        steps = []
        for t in range(lengths[row]):
            o = model.run_decoder(out.sequences[row : row + 1, t : t + 1], memory if t == 0 else None, cache=cache,
                                  need_weights=True)
            steps.append(o.cross_attentions[-1].mean(dim=1)[0, 0])
        assert torch.allclose(torch.stack(steps), attn[row, : lengths[row], : alone.shape[1]], atol=1e-5)
    every = model.generate(src, MAX_NEW, mask, beam_size=4, return_attentions=True, attention_layers="all")
    full = model.run_decoder(every.sequences[:, :-1], model.encode(src, mask), mask, need_weights=True)
    mean_all = torch.stack([w.mean(dim=1) for w in full.cross_attentions]).mean(dim=0)
    for row, length in enumerate(generated_lengths(every.sequences)):
        assert torch.allclose(every.cross_attentions[row, :length], mean_all[row, :length], atol=1e-6)


# -- bad arguments -------------------------------------------------------------------------------


def test_bad_arguments_name_the_fix(model):
    src, mask = padded_sources(seed=9)
    cases = [
        (dict(beam_size=2, num_return_sequences=3), "num_return_sequences"),
        (dict(beam_size=0), "beam_size"),
        (dict(beam_size=2, length_penalty_style="fairseq"), "length_penalty_style"),
        (dict(beam_size=2, early_stopping="sometimes"), "early_stopping"),
        (dict(beam_size=2, bad_ids=[EOS], force_eos=True), "eos_id"),
        (dict(beam_size=2, bad_ids=[VOCAB]), "bad_ids"),
        (dict(return_attentions=True, attention_layers="first"), "attention_layers"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            model.generate(src, MAX_NEW, mask, **options)


def test_rope_model_cached_equals_uncached():
    model = marian_like(seed=3, positional="rope")
    src, mask = padded_sources(seed=10, lengths=(6, 4))
    sequences, scores = beam_search(model, src, mask, beam_size=3, max_new_tokens=MAX_NEW, num_return_sequences=3)
    for row in range(2):
        expected = reference_beam_search(model, src[row : row + 1, : int(mask[row].sum())], 3, MAX_NEW)
        for j, (score, tokens) in enumerate(expected):
            assert sequences[row * 3 + j, : len(tokens)].tolist() == tokens
            assert scores[row * 3 + j].item() == pytest.approx(score, abs=5e-5)


# -- Hugging Face equality -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_pair():
    transformers = pytest.importorskip("transformers")
    from nanoformer.interop import from_hf

    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        activation_function="swish", scale_embedding=True, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=EOS,
    )
    torch.manual_seed(0)
    hf = transformers.MarianMTModel(config).eval()
    jitter(hf, seed=12)
    w = position_readout(from_hf(hf))
    with torch.no_grad():  # eos rises with the position, in Marian's own weights
        hf.model.shared.weight[EOS] = w[:-1]
        hf.final_logits_bias[0, EOS] = w[-1] - 5.0
    return hf, from_hf(hf)


HF_SETTINGS = [
    dict(length_penalty=1.0, early_stopping=False, num_return_sequences=1),
    dict(length_penalty=1.0, early_stopping=False, num_return_sequences=4),
    dict(length_penalty=2.0, early_stopping="never", num_return_sequences=2),
    dict(length_penalty=0.0, early_stopping=True, num_return_sequences=2),
    dict(length_penalty=-1.0, early_stopping=False, num_return_sequences=1),
]


@pytest.mark.parametrize("setting", HF_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_beam4_equals_hf_generate(hf_pair, setting, chunk):
    """HF's opus-mt generation config: bad_words_ids=[[pad]], forced_eos_token_id=eos; here both given
    explicitly. max_new_tokens bounds both (HF: max_length = 1 + max_new_tokens)."""
    hf, ours = hf_pair
    all_lengths = []
    for seed, lengths in ((20, (7, 3, 9, 5)), (21, (2, 11, 6)), (22, (10, 10, 4, 8, 1))):
        src, mask = padded_sources(seed, lengths)
        with torch.no_grad():
            theirs = hf.generate(input_ids=src, attention_mask=mask, num_beams=4, max_new_tokens=MAX_NEW,
                                 bad_words_ids=[[PAD]], forced_eos_token_id=EOS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True, **setting)
        mine = ours.generate(src, MAX_NEW, mask, beam_size=4, bad_ids=[PAD], force_eos=True, return_scores=True,
                             **setting)
        assert torch.equal(mine.sequences, theirs.sequences)
        assert torch.allclose(mine.scores, theirs.sequences_scores, atol=1e-4)
        all_lengths += generated_lengths(mine.sequences)
    assert len(set(all_lengths)) >= 4  # hypotheses of many lengths, not all cut at the limit


def test_hf_greedy_equality_and_export_back(hf_pair):
    from nanoformer.interop import to_hf

    hf, ours = hf_pair
    src, mask = padded_sources(23, (7, 3, 9, 5))
    with torch.no_grad():
        theirs = hf.generate(input_ids=src, attention_mask=mask, num_beams=1, max_new_tokens=MAX_NEW,
                             bad_words_ids=[[PAD]], forced_eos_token_id=EOS, do_sample=False)
    assert torch.equal(ours.generate(src, MAX_NEW, mask, bad_ids=[PAD], force_eos=True), theirs)
    back = to_hf(ours)
    with torch.no_grad():
        again = back.generate(input_ids=src, attention_mask=mask, num_beams=4, max_new_tokens=MAX_NEW,
                              bad_words_ids=[[PAD]], forced_eos_token_id=EOS, do_sample=False)
    assert torch.equal(ours.generate(src, MAX_NEW, mask, beam_size=4, bad_ids=[PAD], force_eos=True), again)


def test_imported_generation_settings_are_the_translate_defaults(hf_pair, tmp_path):
    """import-hf keeps a Marian model's generation_config (num_beams, max_length, bad_words_ids,
    forced_eos_token_id); with those as defaults our translations equal Hugging Face's default
    `generate()`, also for the sentences cut at the length limit; export-hf writes them back."""
    import copy

    import transformers

    from nanoformer.api import load
    from nanoformer.generation.translation import translate_ids
    from nanoformer.interop.folders import export_hf, import_hf
    from nanoformer.training.checkpoint import read_config

    hf = copy.deepcopy(hf_pair[0])
    hf.generation_config = transformers.GenerationConfig(
        num_beams=4, max_length=9, bad_words_ids=[[PAD]], forced_eos_token_id=EOS, decoder_start_token_id=PAD,
        pad_token_id=PAD, eos_token_id=EOS)
    hf.save_pretrained(tmp_path / "hf")
    checkpoint = import_hf(str(tmp_path / "hf"), tmp_path / "ours")
    defaults = read_config(checkpoint)["generation"]
    assert defaults == {"beam_size": 4, "length_penalty": 1.0, "max_len_a": 0.0, "max_len_b": 8, "bad_ids": [PAD],
                        "force_eos": True}
    model, _ = load(checkpoint)
    cut = 0
    for seed, lengths in ((30, (7, 3, 9, 5)), (31, (2, 11, 6))):
        src, mask = padded_sources(seed, lengths)
        with torch.no_grad():
            theirs = hf.generate(input_ids=src, attention_mask=mask)  # its generation_config, nothing else
        sources = [src[row, : int(mask[row].sum())].tolist() for row in range(src.shape[0])]
        mine = translate_ids(model, sources, PAD, EOS, **{k: v for k, v in defaults.items()})
        for row, tokens in enumerate(theirs[:, 1:].tolist()):
            expected = tokens[: tokens.index(EOS)] if EOS in tokens else tokens
            assert mine[row] == expected
            cut += len(expected) == defaults["max_len_b"] - 1  # forced eos at the limit
    assert cut > 0  # some sentences did reach the limit, where the defaults matter
    back = export_hf(checkpoint, tmp_path / "back")
    settings = transformers.GenerationConfig.from_pretrained(back)
    assert (settings.num_beams, settings.max_length, settings.bad_words_ids, settings.forced_eos_token_id) == \
        (4, 9, [[PAD]], EOS)

"""The three model families: math path == sdpa path, causality, padding invariance, cached decoding
== full forward, fully padded rows, initialisation, weight tying and input validation."""

from __future__ import annotations

import math

import pytest
import torch

from nanoformer.config import ModelConfig
from nanoformer.models import DecoderModel, EncoderModel, Seq2SeqTransformer, build_model

TOL = 1e-5
POSITIONALS = ["sinusoidal", "learned", "rope", "alibi", "none"]
V = 23  # vocabulary of the tiny test models; 0 is padding


def make(arch: str, positional: str = "learned", impl: str = "sdpa", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny model with every parameter perturbed (non-zero biases, non-unit norms, non-zero pad row)."""
    values = dict(
        arch=arch, vocab_size=V, d_model=16, n_heads=2, n_layers=2, d_ff=24, max_positions=24, dropout=0.0,
        attention_dropout=0.0, positional=positional, attention_impl=impl, pad_id=0, bos_id=1, eos_id=2,
    )
    if arch == "encoder":
        values.update(norm_position="post", embedding_norm=True, type_vocab_size=2, output_bias=True, init="bert")
    if arch == "encoder-decoder":
        values.update(norm_position="post", scale_embeddings=True, target_vocab_size=19, init="xavier",
                      output_bias=True, n_encoder_layers=2, n_decoder_layers=3)
    values.update(overrides)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**values))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def twin(model: torch.nn.Module, **changes) -> torch.nn.Module:
    """The same weights under a changed config (e.g. the other attention path)."""
    other = build_model(model.config.replace(**changes)).eval()
    other.load_state_dict(model.state_dict())
    return other


def ids(batch: int, length: int, seed: int, vocab: int = V, low: int = 3) -> torch.Tensor:
    return torch.randint(low, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def right_padded(seqs: list[torch.Tensor], fill_seed: int = 99, vocab: int = 19) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of right-padded sequences; the padding holds *random* ids so only the mask can hide it."""
    length = max(len(s) for s in seqs)
    batch = ids(len(seqs), length, fill_seed, vocab=vocab)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return batch, mask


def left_padded(seqs: list[torch.Tensor], fill_seed: int = 98, vocab: int = 19) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in seqs)
    batch = ids(len(seqs), length, fill_seed, vocab=vocab)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, length - len(s) :] = s
        mask[i, length - len(s) :] = 1
    return batch, mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


# -- math path == sdpa path, forward and gradients ------------------------------------------------


def _inputs(arch: str):
    if arch == "decoder":
        batch, mask = left_padded([ids(1, 7, 1)[0], ids(1, 4, 2)[0], ids(1, 1, 3)[0]])
        return dict(input_ids=batch, attention_mask=mask)
    if arch == "encoder":
        batch, mask = right_padded([ids(1, 7, 4)[0], ids(1, 3, 5)[0], ids(1, 5, 6)[0]])
        types = (torch.arange(7) >= 3).long().expand(3, 7).clone()
        return dict(input_ids=batch, attention_mask=mask, token_type_ids=types)
    src, src_mask = right_padded([ids(1, 6, 7)[0], ids(1, 2, 8)[0], ids(1, 4, 9)[0]])
    tgt, tgt_mask = right_padded([ids(1, 5, 10, vocab=19)[0], ids(1, 5, 11, vocab=19)[0], ids(1, 3, 12, vocab=19)[0]])
    return dict(src_ids=src, tgt_ids=tgt, src_padding_mask=src_mask, tgt_padding_mask=tgt_mask)


@pytest.mark.parametrize("arch", ["decoder", "encoder", "encoder-decoder"])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_math_path_equals_sdpa_path(arch, positional):
    fast = make(arch, positional, impl="sdpa", seed=1)
    slow = twin(fast, attention_impl="math")
    assert all(layer.self_attn.impl == "math" for layer in (slow.decoder if arch != "encoder" else slow.encoder).layers)
    inputs = _inputs(arch)
    results = []
    for model in (fast, slow):
        model.zero_grad()
        logits = model(**inputs)
        weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
        (logits * weights).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (logits_f, grads_f), (logits_s, grads_s) = results
    assert max_diff(logits_f, logits_s) <= TOL
    assert grads_f.keys() == grads_s.keys() and len(grads_f) > 10
    for name in grads_f:  # fp32 sums of O(10) terms: 1e-5 relative to the gradient's own scale
        scale = max(1.0, float(grads_f[name].abs().max()))
        assert max_diff(grads_f[name], grads_s[name]) <= TOL * scale, name


@pytest.mark.parametrize("positional", POSITIONALS)
def test_math_path_equals_sdpa_path_with_cache(positional):
    fast = make("decoder", positional, impl="sdpa", seed=2)
    slow = twin(fast, attention_impl="math")
    prompt, mask = left_padded([ids(1, 5, 13)[0], ids(1, 2, 14)[0]])
    outs = []
    for model in (fast, slow):
        cache = model.new_cache(4)
        steps = [model.decode_step(prompt, cache, attention_mask=mask)]
        for t in range(3):
            mask = torch.cat([mask[:, : prompt.shape[1] + t], torch.ones(2, 1, dtype=torch.long)], dim=1)
            steps.append(model.decode_step(ids(2, 1, 20 + t), cache, attention_mask=mask))
        mask = mask[:, : prompt.shape[1]]
        outs.append(torch.cat(steps, dim=1))
    assert max_diff(*outs) <= TOL


# -- causality -------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_decoder_is_causal(positional, impl):
    model = make("decoder", positional, impl=impl, seed=3)
    x = ids(2, 8, 30)
    base = model(x)
    for t in (0, 3, 6):
        changed = x.clone()
        changed[:, t + 1 :] = ids(2, 8 - t - 1, 31 + t)
        out = model(changed)
        assert max_diff(out[:, : t + 1], base[:, : t + 1]) <= TOL
        assert max_diff(out[:, t + 1 :], base[:, t + 1 :]) > 1e-4  # the change is visible later on


@pytest.mark.parametrize("positional", POSITIONALS)
def test_seq2seq_decoder_is_causal(positional):
    model = make("encoder-decoder", positional, seed=4)
    src = ids(2, 6, 32)
    tgt = ids(2, 7, 33, vocab=19)
    base = model(src, tgt)
    for t in (0, 4):
        changed = tgt.clone()
        changed[:, t + 1 :] = ids(2, 7 - t - 1, 34 + t, vocab=19)
        out = model(src, changed)
        assert max_diff(out[:, : t + 1], base[:, : t + 1]) <= TOL
        assert max_diff(out[:, t + 1 :], base[:, t + 1 :]) > 1e-4
    # the encoder is bidirectional: changing the *last* source token changes the first target logit
    src2 = src.clone()
    src2[:, -1] = (src[:, -1] + 1 - 3) % (V - 3) + 3
    assert max_diff(model(src2, tgt)[:, 0], base[:, 0]) > 1e-4


def test_encoder_is_bidirectional():
    model = make("encoder", seed=5)
    x = ids(1, 6, 35)
    changed = x.clone()
    changed[0, -1] = (x[0, -1] + 1 - 3) % (V - 3) + 3
    assert max_diff(model(x)[0, 0], model(changed)[0, 0]) > 1e-4


# -- padding invariance ----------------------------------------------------------------------------


@pytest.mark.parametrize("positional", POSITIONALS)
def test_encoder_right_padding_invariance(positional):
    model = make("encoder", positional, seed=6)
    seqs = [ids(1, n, 40 + n)[0] for n in (7, 3, 1, 5)]
    batch, mask = right_padded(seqs)
    types = torch.randint(0, 2, batch.shape, generator=torch.Generator().manual_seed(7))
    out = model(batch, attention_mask=mask, token_type_ids=types)
    hidden = model.encode(batch, attention_mask=mask.bool(), token_type_ids=types)
    for i, s in enumerate(seqs):
        n = len(s)
        alone = model(s[None], token_type_ids=types[i : i + 1, :n])
        assert max_diff(out[i, :n], alone[0]) <= TOL
        assert max_diff(hidden[i, :n], model.encode(s[None], token_type_ids=types[i : i + 1, :n])[0]) <= TOL


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_padding_invariance(positional, side):
    model = make("decoder", positional, seed=7)
    seqs = [ids(1, n, 50 + n)[0] for n in (6, 2, 4, 1)]
    batch, mask = (right_padded if side == "right" else left_padded)(seqs)
    out = model(batch, attention_mask=mask)
    for i, s in enumerate(seqs):
        n = len(s)
        alone = model(s[None])[0]
        real = out[i, :n] if side == "right" else out[i, batch.shape[1] - n :]
        assert max_diff(real, alone) <= TOL


@pytest.mark.parametrize("positional", POSITIONALS)
def test_seq2seq_padding_invariance(positional):
    model = make("encoder-decoder", positional, seed=8)
    srcs = [ids(1, n, 60 + n)[0] for n in (5, 2, 7)]
    tgts = [ids(1, n, 70 + n, vocab=19)[0] for n in (3, 6, 1)]
    src, src_mask = right_padded(srcs)
    tgt, tgt_mask = right_padded(tgts, fill_seed=97)
    out = model(src, tgt, src_padding_mask=src_mask, tgt_padding_mask=tgt_mask)
    memory = model.encode(src, src_mask)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        alone = model(s[None], t[None])[0]
        assert max_diff(out[i, : len(t)], alone) <= TOL
        assert max_diff(memory[i, : len(s)], model.encode(s[None])[0]) <= TOL


# -- cached decoding == full forward ---------------------------------------------------------------


def step_through(model, tokens, cache, attention_mask=None, chunk=3):
    """Feed `tokens` as one chunk of `chunk` tokens, then one token at a time."""
    outs = []
    pieces = [tokens[:, :chunk]] + [tokens[:, t : t + 1] for t in range(chunk, tokens.shape[1])]
    start = cache.length
    for piece in pieces:
        end = start + piece.shape[1]
        mask = attention_mask[:, :end] if attention_mask is not None else None
        outs.append(model.decode_step(piece, cache, attention_mask=mask))
        start = end
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_decoder_cache_equals_full_forward(positional, impl):
    model = make("decoder", positional, impl=impl, seed=9)
    x = ids(3, 10, 80)
    full = model(x)
    cache = model.new_cache(capacity=4)  # too small on purpose: it must grow
    stepped = step_through(model, x, cache)
    assert cache.length == 10 and cache.layers[0].k.shape[2] >= 10
    assert max_diff(stepped, full) <= TOL


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_cache_with_left_padded_prompt(positional):
    model = make("decoder", positional, seed=10)
    prompts = [ids(1, n, 81 + n)[0] for n in (5, 2, 3)]
    prompt, mask = left_padded(prompts)
    continuation = ids(3, 4, 90)
    tokens = torch.cat([prompt, continuation], dim=1)
    full_mask = torch.cat([mask, torch.ones(3, 4, dtype=torch.long)], dim=1)
    full = model(tokens, attention_mask=full_mask)
    cache = model.new_cache()
    stepped = step_through(model, tokens, cache, attention_mask=full_mask, chunk=prompt.shape[1])
    assert max_diff(stepped, full) <= TOL
    # and each row's continuation is what the unpadded prompt alone would give
    for i, p in enumerate(prompts):
        alone = model(torch.cat([p, continuation[i]])[None])[0]
        assert max_diff(stepped[i, -4:], alone[-4:]) <= TOL


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_cache_reorder_and_trim(positional):
    model = make("decoder", positional, seed=11)
    prompt = ids(3, 5, 91)
    cache = model.new_cache(capacity=6)
    model.decode_step(prompt, cache)
    index = torch.tensor([2, 0, 0, 1])  # reverse-ish, duplicate a row, grow the batch
    cache.reorder(index)
    cont = ids(4, 4, 92)
    stepped = step_through(model, cont, cache, chunk=1)
    full = model(torch.cat([prompt[index], cont], dim=1))
    assert max_diff(stepped, full[:, 5:]) <= TOL
    # rewind to 3 positions and take another path
    cache.trim(3)
    assert cache.length == 3
    alt = ids(4, 3, 93)
    stepped = step_through(model, alt, cache, chunk=2)
    full = model(torch.cat([prompt[index][:, :3], alt], dim=1))
    assert max_diff(stepped, full[:, 3:]) <= TOL


def _seq2seq_case(seed):
    srcs = [ids(1, n, seed + n)[0] for n in (6, 3, 4)]
    src, src_mask = right_padded(srcs)
    tgt = ids(3, 8, seed + 50, vocab=19)
    return src, src_mask, tgt


def count_calls(modules):
    counter = {"n": 0}

    def hook(*_):
        counter["n"] += 1

    handles = [m.register_forward_hook(hook) for m in modules]
    return counter, handles


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_seq2seq_cache_equals_full_forward(positional, impl):
    model = make("encoder-decoder", positional, impl=impl, seed=12)
    src, src_mask, tgt = _seq2seq_case(100)
    full = model(src, tgt, src_padding_mask=src_mask)
    kv_projs = [layer.cross_attn.kv_proj for layer in model.decoder.layers]
    counter, handles = count_calls(kv_projs)
    try:
        memory = model.encode(src, src_mask)
        cache = model.new_cache(capacity=3)
        outs = [model.decode_step(tgt[:, :3], memory, cache, src_padding_mask=src_mask)]
        cross_k = cache.layers[0].cross_k
        for t in range(3, tgt.shape[1]):
            # memory is not needed again: its keys/values are in the cache
            outs.append(model.decode_step(tgt[:, t : t + 1], None, cache, src_padding_mask=src_mask))
            assert cache.layers[0].cross_k is cross_k
    finally:
        for h in handles:
            h.remove()
    assert counter["n"] == len(kv_projs)  # once per layer for the whole decoding
    assert max_diff(torch.cat(outs, dim=1), full) <= TOL


@pytest.mark.parametrize("positional", POSITIONALS)
def test_seq2seq_cache_reorder_and_trim(positional):
    model = make("encoder-decoder", positional, seed=13)
    src, src_mask, tgt = _seq2seq_case(200)
    memory = model.encode(src, src_mask)
    cache = model.new_cache(capacity=2)
    model.decode_step(tgt[:, :4], memory, cache, src_padding_mask=src_mask)
    index = torch.tensor([2, 1, 1, 0])
    cache.reorder(index)
    outs = [model.decode_step(tgt[index, t : t + 1], None, cache, src_padding_mask=src_mask[index]) for t in range(4, 8)]
    full = model(src[index], tgt[index], src_padding_mask=src_mask[index])
    assert max_diff(torch.cat(outs, dim=1), full[:, 4:]) <= TOL
    cache.trim(2)
    alt = ids(4, 3, 201, vocab=19)
    outs = [model.decode_step(alt[:, t : t + 1], None, cache, src_padding_mask=src_mask[index]) for t in range(3)]
    full = model(src[index], torch.cat([tgt[index, :2], alt], dim=1), src_padding_mask=src_mask[index])
    assert max_diff(torch.cat(outs, dim=1), full[:, 2:]) <= TOL


def test_seq2seq_cache_with_padded_targets():
    model = make("encoder-decoder", "rope", seed=14)
    src, src_mask, _ = _seq2seq_case(300)
    tgt, tgt_mask = left_padded([ids(1, n, 301 + n, vocab=19)[0] for n in (4, 2, 3)])
    full = model(src, tgt, src_padding_mask=src_mask, tgt_padding_mask=tgt_mask)
    memory = model.encode(src, src_mask)
    cache = model.new_cache()
    counter, handles = count_calls([layer.cross_attn.kv_proj for layer in model.decoder.layers])
    try:  # memory handed in at every step: still projected once
        outs = [model.decode_step(tgt[:, :2], memory, cache, src_mask, tgt_mask[:, :2])]
        for t in range(2, 4):
            outs.append(model.decode_step(tgt[:, t : t + 1], memory, cache, src_mask, tgt_mask[:, : t + 1]))
    finally:
        for h in handles:
            h.remove()
    assert counter["n"] == len(model.decoder.layers)
    assert max_diff(torch.cat(outs, dim=1), full) <= TOL


# -- fully padded rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("arch", ["decoder", "encoder", "encoder-decoder"])
def test_fully_padded_rows_give_no_nan(arch, impl):
    model = make(arch, "alibi" if arch == "decoder" else "learned", impl=impl, seed=15)
    empty = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])
    x = ids(2, 4, 400, vocab=19)
    if arch == "encoder-decoder":
        logits = model(x, x, src_padding_mask=empty, tgt_padding_mask=empty)
    else:
        logits = model(x, attention_mask=empty)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


# -- initialisation and weight tying ---------------------------------------------------------------


def test_gpt2_init_scales_residual_projections():
    n_layers = 4
    cfg = ModelConfig(arch="decoder", vocab_size=300, d_model=64, n_heads=4, n_layers=n_layers, d_ff=256,
                      max_positions=64, init="gpt2")
    torch.manual_seed(0)
    model = DecoderModel(cfg)
    residual_std = 0.02 / math.sqrt(2 * n_layers)
    for layer in model.decoder.layers:
        for linear in (layer.self_attn.out_proj, layer.ffn.down):
            assert float(linear.weight.detach().std()) == pytest.approx(residual_std, rel=0.1)
            assert (linear.bias == 0).all()
        for linear in (layer.self_attn.qkv_proj, layer.ffn.up):
            assert float(linear.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert float(model.embeddings.tokens.weight[1:].detach().std()) == pytest.approx(0.02, rel=0.1)
    assert (model.embeddings.tokens.weight[0] == 0).all()  # padding row
    assert (model.decoder.final_norm.weight == 1).all() and (model.decoder.final_norm.bias == 0).all()


def test_gpt2_init_counts_both_stacks_of_a_seq2seq_model():
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=100, d_model=64, n_heads=4, n_layers=3, d_ff=256,
                      max_positions=32, init="gpt2")
    torch.manual_seed(1)
    model = Seq2SeqTransformer(cfg)
    expected = 0.02 / math.sqrt(2 * 6)
    stds = [float(l.ffn.down.weight.detach().std()) for l in list(model.encoder.layers) + list(model.decoder.layers)]
    stds.append(float(model.decoder.layers[0].cross_attn.out_proj.weight.detach().std()))
    assert all(s == pytest.approx(expected, rel=0.1) for s in stds)


def test_xavier_init_bounds():
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=100, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                      max_positions=32, init="xavier", share_embeddings=True, tie_embeddings=True)
    torch.manual_seed(2)
    model = Seq2SeqTransformer(cfg)
    n_checked = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            fan_out, fan_in = module.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            w = module.weight.detach()
            assert float(w.abs().max()) <= bound + 1e-7, name
            assert float(w.abs().max()) > 0.8 * bound, name  # uniform over the whole range
            assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15), name
            assert (module.bias == 0).all(), name
            n_checked += 1
    assert n_checked == 2 * 4 + 2 * 7  # encoder: qkv, out, up, down; decoder: + q, kv, out
    emb = model.src_embeddings.tokens.weight[1:].detach()
    assert float(emb.std()) == pytest.approx(32**-0.5, rel=0.1)


def test_bert_init():
    cfg = ModelConfig.from_preset("tiny-encoder")
    torch.manual_seed(3)
    model = EncoderModel(cfg)
    for layer in model.encoder.layers:
        assert float(layer.self_attn.out_proj.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
        assert (layer.self_attn.qkv_proj.bias == 0).all()


def test_tied_weights_share_storage():
    dec = make("decoder", tie_embeddings=True)
    assert dec.lm_head.weight is dec.embeddings.tokens.weight
    assert dec.lm_head.weight.data_ptr() == dec.embeddings.tokens.weight.data_ptr()
    untied = make("decoder", tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embeddings.tokens.weight.data_ptr()

    enc = make("encoder", tie_embeddings=True)
    assert enc.mlm_head.decoder.weight.data_ptr() == enc.embeddings.tokens.weight.data_ptr()

    s2s = make("encoder-decoder", share_embeddings=True, tie_embeddings=True, target_vocab_size=None)
    ptrs = {s2s.src_embeddings.tokens.weight.data_ptr(), s2s.tgt_embeddings.tokens.weight.data_ptr(),
            s2s.lm_head.weight.data_ptr()}
    assert len(ptrs) == 1
    # tying survives a state-dict round trip and training: one update moves all three
    copy = twin(s2s)
    assert copy.lm_head.weight.data_ptr() == copy.src_embeddings.tokens.weight.data_ptr()
    with torch.no_grad():
        copy.lm_head.weight[5, 0] += 1.0
    assert copy.src_embeddings.tokens.weight[5, 0] == copy.lm_head.weight[5, 0]

    separate = make("encoder-decoder", share_embeddings=False, tie_embeddings=True)
    assert separate.lm_head.weight.data_ptr() == separate.tgt_embeddings.tokens.weight.data_ptr()
    assert separate.src_embeddings.tokens.weight.data_ptr() != separate.tgt_embeddings.tokens.weight.data_ptr()
    assert separate.lm_head.weight.shape == (19, 16)


# -- bad input ---------------------------------------------------------------------------------------


def test_decoder_bad_input_names_the_argument():
    model = make("decoder")
    good = ids(2, 5, 500)
    with pytest.raises(ValueError, match="input_ids.*shape"):
        model(good[0])
    with pytest.raises(ValueError, match="input_ids.*integer"):
        model(good.float())
    with pytest.raises(ValueError, match=r"input_ids.*\[-1, .*vocabulary \[0, 23\)"):
        model(torch.tensor([[3, -1, 4]]))
    with pytest.raises(ValueError, match=r"input_ids.*23\].*vocabulary \[0, 23\)"):
        model(torch.tensor([[3, V, 4]]))
    with pytest.raises(ValueError, match="input_ids.*max_positions = 24"):
        model(ids(1, 25, 501))
    with pytest.raises(ValueError, match="attention_mask.*dtype"):
        model(good, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"attention_mask.*\(2, 5\).*\(2, 4\)"):
        model(good, attention_mask=torch.ones(2, 4, dtype=torch.long))
    cache = model.new_cache()
    model.decode_step(ids(1, 20, 502), cache)
    with pytest.raises(ValueError, match="input_ids.*after 20 cached.*max_positions"):
        model.decode_step(ids(1, 5, 503), cache)
    with pytest.raises(ValueError, match="attention_mask.*21"):
        model.decode_step(ids(1, 1, 504), cache, attention_mask=torch.ones(1, 1, dtype=torch.long))


def test_encoder_bad_input_names_the_argument():
    model = make("encoder")
    good = ids(2, 5, 510)
    with pytest.raises(ValueError, match="token_type_ids.*shape"):
        model(good, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids.*vocabulary \\[0, 2\\)"):
        model(good, token_type_ids=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="attention_mask.*dtype"):
        model(good, attention_mask=torch.ones(2, 5, dtype=torch.float32))
    with pytest.raises(ValueError, match="attention_mask.*shape"):
        model(good, attention_mask=torch.ones(2, 1, 1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="input_ids.*max_positions"):
        model(ids(1, 25, 511))
    with pytest.raises(ValueError, match="input_ids.*vocabulary"):
        model(torch.tensor([[-3, 4]]))


def test_seq2seq_bad_input_names_the_argument():
    model = make("encoder-decoder")
    src, tgt = ids(2, 5, 520), ids(2, 4, 521, vocab=19)
    with pytest.raises(ValueError, match="src_ids.*vocabulary \\[0, 23\\)"):
        model(torch.full((2, 5), V), tgt)
    with pytest.raises(ValueError, match="tgt_ids.*vocabulary \\[0, 19\\)"):
        model(src, torch.full((2, 4), 19))  # valid source id, but not a target id
    with pytest.raises(ValueError, match="tgt_ids.*shape"):
        model(src, tgt[0])
    with pytest.raises(ValueError, match="src_padding_mask.*dtype"):
        model(src, tgt, src_padding_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="src_padding_mask.*shape"):
        model(src, tgt, src_padding_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="tgt_padding_mask.*shape"):
        model(src, tgt, tgt_padding_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="src_ids.*max_positions"):
        model(ids(1, 25, 522), tgt[:1])
    with pytest.raises(ValueError, match="tgt_ids.*max_positions"):
        model(src[:1], ids(1, 25, 523, vocab=19))


def test_model_classes_check_their_arch():
    cfg = ModelConfig(arch="decoder", vocab_size=V)
    with pytest.raises(ValueError, match="arch"):
        EncoderModel(cfg)
    with pytest.raises(ValueError, match="arch"):
        Seq2SeqTransformer(cfg)
    with pytest.raises(ValueError, match="arch"):
        DecoderModel(cfg.replace(arch="encoder"))
    assert isinstance(build_model(cfg), DecoderModel)


# -- sentence embeddings ---------------------------------------------------------------------------


def test_encoder_embed_is_normalised_mean_of_real_tokens():
    model = make("encoder", seed=16)
    seqs = [ids(1, n, 530 + n)[0] for n in (5, 2)]
    batch, mask = right_padded(seqs)
    vecs = model.embed(batch, attention_mask=mask)
    assert vecs.shape == (2, 16)
    assert torch.allclose(vecs.norm(dim=-1), torch.ones(2), atol=1e-6)
    for i, s in enumerate(seqs):
        hidden = model.encode(s[None])[0]
        expected = torch.nn.functional.normalize(hidden.mean(0), dim=0)
        assert max_diff(vecs[i], expected) <= TOL
    raw = model.embed(seqs[0][None], normalize=False)
    assert max_diff(raw[0], model.encode(seqs[0][None])[0].mean(0)) <= TOL

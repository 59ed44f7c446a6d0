"""Feed-forward activations, norms, and the residual wiring of encoder/decoder layers and stacks."""

from __future__ import annotations

import math

import pytest
import torch

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Decoder, DecoderLayer, Encoder, EncoderLayer
from nanoformer.layers.feedforward import FeedForward
from nanoformer.layers.masks import padding_mask
from nanoformer.layers.norms import RMSNorm, make_norm

TOL = 1e-5


def reference_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.where(x > 0, x, torch.zeros_like(x))
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name in ("silu", "swiglu"):
        return x / (1 + torch.exp(-x))
    raise AssertionError(name)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu", "swiglu"])
@pytest.mark.parametrize("bias", [True, False])
def test_feedforward_matches_formula(activation, bias):
    torch.manual_seed(0)
    ffn = FeedForward(6, 10, activation, bias=bias).eval()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    ffn = ffn.double()

    def linear(layer, inp):
        out = inp @ layer.weight.T
        return out + layer.bias if layer.bias is not None else out

    if activation == "swiglu":
        assert ffn.gate is not None
        hidden = reference_activation("silu", linear(ffn.gate, x)) * linear(ffn.up, x)
    else:
        assert ffn.gate is None
        hidden = reference_activation(activation, linear(ffn.up, x))
    expected = linear(ffn.down, hidden)
    assert (ffn(x) - expected).abs().max() <= 1e-10
    assert (ffn.up.bias is not None) == bias


def test_activations_differ_from_each_other():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6)
    outs = {}
    for act in ["relu", "gelu", "gelu_tanh", "silu"]:
        torch.manual_seed(2)
        outs[act] = FeedForward(6, 10, act)(x)
    names = list(outs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert (outs[names[i]] - outs[names[j]]).abs().max() > 1e-6


def test_unknown_activation_and_norm_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        FeedForward(4, 8, "tanh")
    with pytest.raises(ValueError, match="norm"):
        make_norm("batchnorm", 4, 1e-5)


def test_rmsnorm_matches_formula():
    torch.manual_seed(3)
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 8) * 4 + 1
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert (norm(x) - expected).abs().max() <= TOL
    assert sum(p.numel() for p in norm.parameters()) == 8  # gain only, no bias
    half = RMSNorm(8).half()(x.half())  # computed in fp32 inside, returned in the input's dtype
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_layernorm_matches_formula():
    torch.manual_seed(4)
    norm = make_norm("layernorm", 8, 1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 8) * 3 + 2
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    assert (norm(x) - expected).abs().max() <= TOL
    assert make_norm("layernorm", 8, 1e-5, bias=False).bias is None


# -- layer wiring ----------------------------------------------------------------------------------


def config(norm_position: str, **overrides) -> ModelConfig:
    values = dict(
        arch="decoder", vocab_size=20, d_model=16, n_heads=2, n_layers=2, d_ff=24, max_positions=16,
        dropout=0.0, norm_position=norm_position, positional="none",
    )
    values.update(overrides)
    return ModelConfig(**values)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial norm gains/biases, so a missing or misplaced norm shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.normal_()


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_encoder_layer_formula(norm_position):
    layer = EncoderLayer(config(norm_position)).eval()
    randomize(layer, 5)
    torch.manual_seed(6)
    x = torch.randn(2, 5, 16)
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    attn = lambda inp: layer.self_attn(inp, mask=mask)[0]  # noqa: E731
    n1, n2 = layer.self_attn_norm, layer.ffn_norm
    if norm_position == "post":
        h = n1(x + attn(x))
        expected = n2(h + layer.ffn(h))
    else:
        h = x + attn(n1(x))
        expected = h + layer.ffn(n2(h))
    out, weights = layer(x, mask=mask)
    assert weights is None
    assert (out - expected).abs().max() <= TOL


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_decoder_layer_formula(norm_position):
    layer = DecoderLayer(config(norm_position, arch="encoder-decoder"), cross=True).eval()
    randomize(layer, 7)
    torch.manual_seed(8)
    x, memory = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    memory_mask = padding_mask(torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]]))
    self_attn = lambda inp: layer.self_attn(inp, causal=True)[0]  # noqa: E731
    cross_attn = lambda inp: layer.cross_attn(inp, memory=memory, mask=memory_mask)[0]  # noqa: E731
    n1, n2, n3 = layer.self_attn_norm, layer.cross_attn_norm, layer.ffn_norm
    if norm_position == "post":
        h = n1(x + self_attn(x))
        h = n2(h + cross_attn(h))
        expected = n3(h + layer.ffn(h))
    else:
        h = x + self_attn(n1(x))
        h = h + cross_attn(n2(h))
        expected = h + layer.ffn(n3(h))
    out, self_w, cross_w = layer(x, memory=memory, memory_mask=memory_mask, need_weights=True)
    assert (out - expected).abs().max() <= TOL
    assert self_w.shape == (2, 2, 4, 4) and cross_w.shape == (2, 2, 4, 6)
    assert (torch.triu(self_w, diagonal=1) == 0).all()
    assert (cross_w[1, :, :, 3:] == 0).all()


def test_decoder_layer_without_cross_attention():
    layer = DecoderLayer(config("pre"), cross=False)
    assert layer.cross_attn is None and layer.cross_attn_norm is None
    out, _, cross_w = layer(torch.randn(1, 3, 16), need_weights=True)
    assert out.shape == (1, 3, 16) and cross_w is None


@pytest.mark.parametrize("norm_position, final", [("pre", None), ("post", None), ("post", True), ("pre", False)])
def test_encoder_stack_final_norm(norm_position, final):
    cfg = config(norm_position, final_norm=final)
    stack = Encoder(cfg, 2).eval()
    randomize(stack, 9)
    has_final = norm_position == "pre" if final is None else final
    assert (stack.final_norm is not None) == has_final
    torch.manual_seed(10)
    x = torch.randn(2, 5, 16)
    positions = torch.arange(5).unsqueeze(0)
    h = x
    for layer in stack.layers:
        h, _ = layer(h)
    expected = stack.final_norm(h) if has_final else h
    out = stack(x, positions, need_weights=True)
    assert (out.hidden - expected).abs().max() <= TOL
    assert len(out.self_attentions) == 2 and out.cross_attentions is None


def test_decoder_stack_returns_every_layers_weights():
    cfg = config("pre", arch="encoder-decoder", n_layers=3)
    stack = Decoder(cfg, 3, cross=True).eval()
    out = stack(torch.randn(2, 4, 16), torch.arange(4).unsqueeze(0), memory=torch.randn(2, 5, 16), need_weights=True)
    assert out.hidden.shape == (2, 4, 16)
    assert [w.shape for w in out.self_attentions] == [(2, 2, 4, 4)] * 3
    assert [w.shape for w in out.cross_attentions] == [(2, 2, 4, 5)] * 3


def test_dropout_is_active_in_training_only():
    cfg = config("pre", dropout=0.5)
    layer = EncoderLayer(cfg)
    torch.manual_seed(11)
    x = torch.randn(2, 5, 16)
    layer.train()
    a, _ = layer(x)
    b, _ = layer(x)
    assert (a - b).abs().max() > 1e-4
    layer.eval()
    c, _ = layer(x)
    d, _ = layer(x)
    assert torch.equal(c, d)


# -- embeddings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope"])
def test_embeddings_formula(positional):
    from nanoformer.layers.embedding import Embeddings
    from nanoformer.layers.positional import sinusoidal_table

    torch.manual_seed(12)
    emb = Embeddings(11, 8, positional=positional, max_positions=10, type_vocab_size=2, scale=True,
                     norm="layernorm", norm_eps=1e-5).eval()
    with torch.no_grad():
        for p in emb.parameters():
            p.normal_()
    tokens = torch.tensor([[1, 5, 7], [10, 0, 2]])
    positions = torch.tensor([[0, 1, 2], [4, 5, 9]])
    types = torch.tensor([[0, 1, 1], [1, 0, 0]])
    x = emb.tokens.weight[tokens] * math.sqrt(8) + emb.token_types.weight[types]
    if positional == "learned":
        x = x + emb.positions.weight[positions]
    elif positional == "sinusoidal":
        x = x + sinusoidal_table(10, 8)[positions]
    else:
        assert emb.positions is None  # relative positions act inside attention
    expected = emb.norm(x)
    assert (emb(tokens, positions, types) - expected).abs().max() <= TOL
    # no segment ids: every token is in segment 0
    default = emb.norm(x - emb.token_types.weight[types] + emb.token_types.weight[0])
    assert (emb(tokens, positions) - default).abs().max() <= TOL


def test_embeddings_without_scale_or_norm():
    from nanoformer.layers.embedding import Embeddings

    emb = Embeddings(11, 8, positional="none", max_positions=10)
    tokens = torch.tensor([[3, 4]])
    assert torch.equal(emb(tokens, torch.tensor([[0, 1]])), emb.tokens.weight[tokens])

"""Looking inside models: the attention shown is the model's own, the HTML is offline, Korean
labels have glyphs, positional and metric plots are drawn, and bad input ends in exit code 2."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch

from nanoformer.cli import main
from nanoformer.config import ModelConfig
from nanoformer.models import build_model
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import save_checkpoint
from nanoformer.viz.attention import extract_attention, load_attention, token_labels
from nanoformer.viz.html import render_html

ARCHS = ["decoder", "encoder", "encoder-decoder"]
POSITIONAL = {"decoder": "learned", "encoder": "rope", "encoder-decoder": "sinusoidal"}
KOREAN = "나는 학교에 간다"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train_char(texts=["나는 학교에 간다. I go to school. http://example.com/a\n"])


def tiny_model(arch: str, tokenizer: Tokenizer, max_positions: int = 24):
    """A random model whose attention is far from uniform (large init), so comparisons mean something."""
    torch.manual_seed(0)
    sp = tokenizer.special_ids()
    config = ModelConfig(
        arch=arch, vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4, n_layers=2, d_ff=64,
        max_positions=max_positions, dropout=0.0, positional=POSITIONAL[arch], init_std=0.3,
        norm_position="post" if arch == "encoder" else "pre",
        pad_id=sp["pad"], bos_id=sp["bos"], eos_id=sp["eos"],
        cls_id=sp["cls"] if arch == "encoder" else None, sep_id=sp["sep"] if arch == "encoder" else None,
    )
    return build_model(config).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for arch in ARCHS:
        model = tiny_model(arch, tokenizer)
        paths[arch] = save_checkpoint(root / arch, model, {"model": model.config.to_dict()}, tokenizer)
    return paths


def recompute(module, x: torch.Tensor, memory: torch.Tensor | None, rope, causal: bool) -> torch.Tensor:
    """softmax(QKᵀ/√d) written out again from the attention module's own projections."""
    if module.cross:
        q = module.q_proj(x)
        k = module.kv_proj(memory)[..., : module.d_model]
    else:
        q, k, _ = module.qkv_proj(x).split(module.d_model, dim=-1)
    b, t, _ = q.shape
    q = q.view(b, t, module.n_heads, module.d_head).transpose(1, 2)
    k = k.view(b, k.shape[1], module.n_heads, module.d_head).transpose(1, 2)
    if rope is not None:
        from nanoformer.layers.positional import apply_rotary

        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    scores = q @ k.transpose(-1, -2) / math.sqrt(module.d_head)
    if causal:
        scores = scores.masked_fill(torch.ones(t, k.shape[2], dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)[0]


def attention_modules(model) -> dict[str, list]:
    if model.config.arch == "decoder":
        return {"decoder_self": [layer.self_attn for layer in model.decoder.layers]}
    if model.config.arch == "encoder":
        return {"encoder_self": [layer.self_attn for layer in model.encoder.layers]}
    return {
        "encoder_self": [layer.self_attn for layer in model.encoder.layers],
        "decoder_self": [layer.self_attn for layer in model.decoder.layers],
        "cross": [layer.cross_attn for layer in model.decoder.layers],
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_are_the_models_own_attention(arch, tokenizer):
    model = tiny_model(arch, tokenizer)
    captured: dict[int, tuple] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda mod, args, kwargs: captured.__setitem__(id(mod), (args[0], kwargs.get("memory"), kwargs.get("rope"),
                                                                      kwargs.get("causal", False))),
            with_kwargs=True)
        for modules in attention_modules(model).values() for module in modules
    ]
    target = "I go to school." if arch == "encoder-decoder" else None
    with torch.no_grad():
        result = extract_attention(model, tokenizer, KOREAN, target=target)
    for hook in hooks:
        hook.remove()
    assert model.config.attention_impl == "sdpa"  # the default path is left as it is
    kinds = attention_modules(model)
    assert [m.kind for m in result.maps] == list(kinds)
    for m in result.maps:
        w = m.weights
        assert w.shape == (2, 4, len(m.query_tokens), len(m.key_tokens))
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)
        assert w.std() > 0.05  # far from uniform: the check below can tell maps apart
        for layer, module in enumerate(kinds[m.kind]):
            x, memory, rope, causal = captured[id(module)]
            with torch.no_grad():
                expected = recompute(module, x, memory, rope, causal)
            torch.testing.assert_close(w[layer], expected, atol=1e-5, rtol=1e-4)
        if m.causal:
            assert torch.all(w.triu(1) == 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_explicit_path_gives_the_default_paths_states(arch, tokenizer):
    """need_weights only adds the weights: the hidden states equal the fused (SDPA) forward's."""
    model = tiny_model(arch, tokenizer)
    ids = torch.tensor([tokenizer.encode(KOREAN)])
    with torch.no_grad():
        if arch == "encoder-decoder":
            fast, slow = model.run_encoder(ids), model.run_encoder(ids, need_weights=True)
            assert fast.self_attentions is None and len(slow.self_attentions) == 2
            fast = model.run_decoder(ids, fast.hidden)
            slow = model.run_decoder(ids, slow.hidden, need_weights=True)
        else:
            fast, slow = model.run(ids), model.run(ids, need_weights=True)
    assert fast.self_attentions is None
    torch.testing.assert_close(fast.hidden, slow.hidden, atol=1e-5, rtol=1e-5)


def html_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


EXTERNAL = [
    re.compile(r"https?://", re.I),
    re.compile(r"//\s*cdn", re.I),
    re.compile(r"""\b(?:src|href)\s*=\s*["']?(?!data:|#)[^"'\s>]""", re.I),
    re.compile(r"@import|url\(", re.I),
    re.compile(r"\bfetch\(|XMLHttpRequest|WebSocket|EventSource|sendBeacon", re.I),
]


def assert_offline(html: str) -> None:
    for pattern in EXTERNAL:
        found = pattern.search(html)
        assert found is None, f"{pattern.pattern!r} matches {html[max(0, found.start() - 40): found.end() + 40]!r}"


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def test_attention_command_translation(checkpoints, tmp_path, capsys):
    out = tmp_path / "att"
    assert run_cli("attention", checkpoints["encoder-decoder"], "--text", KOREAN, "--target", "I go to school.",
                   "--out", out, "--layer", "2", "--head", "1") == 0
    index, tensors = load_attention(out)
    assert [m["kind"] for m in index["maps"]] == ["encoder_self", "decoder_self", "cross"]
    cross = index["maps"][2]
    assert cross["key_tokens"] == [*KOREAN.replace(" ", "␣"), "</s>"]
    assert cross["query_tokens"][:3] == ["<s>", "I", "␣"]
    # The saved weights are exactly what the explicit path of the model returns.
    model = tiny_model("encoder-decoder", Tokenizer.load(checkpoints["encoder-decoder"]))
    tok = Tokenizer.load(checkpoints["encoder-decoder"])
    src = torch.tensor([tok.encode(KOREAN) + [tok.eos_id]])
    tgt = torch.tensor([[tok.bos_id] + tok.encode("I go to school.")])
    with torch.no_grad():
        enc = model.run_encoder(src, need_weights=True)
        dec = model.run_decoder(tgt, enc.hidden, need_weights=True)
    for kind, weights in (("encoder_self", enc.self_attentions), ("decoder_self", dec.self_attentions),
                          ("cross", dec.cross_attentions)):
        assert torch.equal(tensors[kind], torch.stack([w[0] for w in weights]))
    # The page shows the same numbers (rounded), and loads nothing from anywhere.
    html = (out / "attention.html").read_text(encoding="utf-8")
    data = html_data(html)
    for m in data["maps"]:
        torch.testing.assert_close(torch.tensor(m["w"], dtype=torch.float32), tensors[m["kind"]], atol=6e-5, rtol=0)
    assert_offline(html)
    names = {p.name for p in out.iterdir()}
    assert {"alignment.png", "cross_grid.png", "encoder_self_layer2_head1.png", "decoder_self_layer2_head1.png"} <= names
    assert all((out / n).stat().st_size > 1000 for n in names if n.endswith(".png"))


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_attention_command_other_families(arch, checkpoints, tmp_path):
    out = tmp_path / arch
    assert run_cli("attention", checkpoints[arch], "--text", KOREAN, "--out", out, "--no-png") == 0
    index, tensors = load_attention(out)
    (m,) = index["maps"]
    tokens = [*KOREAN.replace(" ", "␣")]
    assert m["query_tokens"] == (["<cls>", *tokens, "<sep>"] if arch == "encoder" else tokens)
    w = tensors[m["kind"]]
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)
    assert (w.triu(1) == 0).all() if arch == "decoder" else (w > 0).all()  # causal / bidirectional


def test_greedy_translation_when_no_target(checkpoints, tmp_path, capsys):
    out = tmp_path / "greedy"
    assert run_cli("attention", checkpoints["encoder-decoder"], "--text", KOREAN, "--out", out, "--no-png",
                   "--max-new-tokens", "5") == 0
    index, tensors = load_attention(out)
    assert index["target_generated"] is True
    n_target = len(index["maps"][2]["query_tokens"])
    assert 1 <= n_target <= 6 and tensors["cross"].shape[2] == n_target


def test_html_escapes_user_text_and_has_no_urls(tokenizer):
    model = tiny_model("decoder", tokenizer)
    result = extract_attention(model, tokenizer, "http://example.com/a")
    html = render_html(result)
    assert_offline(html)
    assert "</script" not in html.split('id="attention-data">')[1].split("</script>")[0]
    assert html_data(html)["source"] == "http://example.com/a"


def test_text_longer_than_the_context_is_truncated(checkpoints, tmp_path, capsys):
    out = tmp_path / "long"
    assert run_cli("attention", checkpoints["decoder"], "--text", KOREAN * 5, "--out", out, "--no-png") == 0
    err = capsys.readouterr().err
    assert "more than the 24" in err and "showing the first 24" in err
    _, tensors = load_attention(out)
    assert tensors["decoder_self"].shape[-1] == 24


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_target_needs_an_encoder_decoder(arch, checkpoints, tmp_path, capsys):
    code = run_cli("attention", checkpoints[arch], "--text", KOREAN, "--target", "x", "--out", tmp_path / "o")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "encoder-decoder" in err and arch in err


def test_unwritable_output_folder(checkpoints, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code = run_cli("attention", checkpoints["decoder"], "--text", KOREAN, "--out", blocker / "sub")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write" in err and "--out" in err
    assert run_cli("plot-positions", "--out", blocker / "p.png") == 2
    assert "cannot write" in capsys.readouterr().err


def test_bad_layer_and_head(checkpoints, tmp_path, capsys):
    assert run_cli("attention", checkpoints["decoder"], "--text", KOREAN, "--out", tmp_path, "--head", "9") == 2
    assert "heads 1 to 4" in capsys.readouterr().err


def test_token_labels_are_readable(tokenizer):
    ids = [tokenizer.bos_id, *tokenizer.encode("나 a\n")]
    assert token_labels(tokenizer, ids) == ["<s>", "나", "␣", "a", "↵"]
    bpe = Tokenizer.train_bpe(texts=["나는 학교에 간다"] * 3, vocab_size=300)
    labels = token_labels(bpe, bpe.encode(KOREAN))
    assert "".join(labels).replace("␣", "") == KOREAN.replace(" ", "")  # no mojibake of byte pieces


def test_column_labels_stay_upright_and_apart():
    """The note's words under the alignment's columns read upright (at most 45° when long) and do not overlap."""
    from nanoformer.viz.heatmaps import _ticks, label_rotation
    from nanoformer.viz.plotting import label_font, pyplot

    words = ["나는", "학교에", "간다", "</s>"]
    assert label_rotation(words) == 0
    assert label_rotation(["Ġtransformation", "a"]) == 45
    assert label_rotation(words * 6, width_in=1.4, fontsize=6) == 45  # 24 columns in a grid's small cell
    plt = pyplot()
    with label_font(words):
        fig, ax = plt.subplots(figsize=(4.3, 3.0))  # plot_matrix's size for four columns
        ax.imshow(torch.rand(3, 4).numpy())
        _ticks(ax, ["I", "go", "to"], words, fontsize=10)
        fig.canvas.draw()
        labels = ax.get_xticklabels()
        assert [label.get_rotation() for label in labels] == [0.0] * 4
        boxes = [label.get_window_extent() for label in labels]
        plt.close(fig)
    assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))


# ----------------------------------------------------------------------------- fonts

def test_korean_labels_render_with_real_glyphs(tokenizer):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from nanoformer.viz.fonts import find_korean_font, has_hangul, missing_glyphs
    from nanoformer.viz.plotting import label_font, pyplot

    choice = find_korean_font()
    if choice is None:
        pytest.skip("no font with Hangul glyphs on this machine (install fonts-noto-cjk: `make viz-deps` as root)")
    labels = token_labels(tokenizer, tokenizer.encode(KOREAN))
    assert has_hangul(labels)
    hangul = "".join(ch for label in labels for ch in label if "\uac00" <= ch <= "\ud7a3")
    assert hangul == KOREAN.replace(" ", "")
    # The chosen font file has a glyph for every Hangul character of the labels ...
    font = FT2Font(choice.path)
    assert all(font.get_char_index(ord(ch)) != 0 for ch in hangul)
    assert missing_glyphs(choice.path, hangul) == ""
    # ... the glyphs are letters, not one "Hangul syllables" box for all (a last-resort font) ...
    outlines = set()
    for ch in "나는학교":
        font.load_char(ord(ch))
        vertices, _ = font.get_path()
        outlines.add(vertices.tobytes())
    assert len(outlines) == 4
    # ... matplotlib resolves the family we set to that file ...
    plt = pyplot()
    with label_font(labels):
        resolved = font_manager.findfont(font_manager.FontProperties(family=plt.rcParams["font.family"]))
        assert Path(resolved).resolve() == Path(choice.path).resolve()
    # ... and drawing the labels in it reports no missing glyph.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import matplotlib

        with matplotlib.rc_context({"font.family": [choice.name]}):
            fig, ax = plt.subplots()
            ax.set_xticks(range(len(labels)), labels)
            fig.canvas.draw()
            plt.close(fig)
    assert not [w for w in caught if "missing" in str(w.message).lower()]


def test_clear_message_when_no_korean_font(checkpoints, tmp_path, capsys, monkeypatch):
    import nanoformer.viz.fonts
    import nanoformer.viz.plotting

    for module in (nanoformer.viz.fonts, nanoformer.viz.plotting):
        monkeypatch.setattr(module, "find_korean_font", lambda: None)
    assert run_cli("attention", checkpoints["decoder"], "--text", KOREAN, "--out", tmp_path, "--layer", "1") == 0
    err = capsys.readouterr().err
    assert "no font with Korean (Hangul) glyphs" in err and "fonts-noto-cjk" in err
    assert (tmp_path / "decoder_self_layer1.png").is_file()


def test_font_coverage_check_detects_missing_hangul():
    from matplotlib import font_manager

    from nanoformer.viz.fonts import font_covers

    dejavu = font_manager.findfont("DejaVu Sans")
    assert font_covers(dejavu, "abc") and not font_covers(dejavu, KOREAN)


# ----------------------------------------------------------------------------- positions and metrics

@pytest.mark.parametrize("kind", ["sinusoidal", "rope"])
def test_plot_positions(kind, tmp_path, capsys):
    out = tmp_path / f"{kind}.png"
    assert run_cli("plot-positions", "--kind", kind, "--d-model", "64", "--length", "50", "--out", out) == 0
    assert out.stat().st_size > 10_000


def test_plot_positions_bad_size(tmp_path, capsys):
    assert run_cli("plot-positions", "--d-model", "7", "--out", tmp_path / "p.png") == 2
    assert "--d-model 7" in capsys.readouterr().err


def test_rope_scores_depend_only_on_offset():
    """What the RoPE figure claims: q·k after rotation is constant along each diagonal."""
    from nanoformer.layers.positional import RotaryEmbedding, apply_rotary

    cos, sin = RotaryEmbedding(16)(torch.arange(20).unsqueeze(0))
    q, k = torch.randn(16).expand(1, 1, 20, 16), torch.randn(16).expand(1, 1, 20, 16)
    scores = apply_rotary(q, cos, sin)[0, 0] @ apply_rotary(k, cos, sin)[0, 0].T
    for offset in (-5, 0, 3):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4, rtol=1e-4)


def write_metrics(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(10, 110, 10):
        record = {"step": step, "train_loss": 4 / math.log(step), "lr": 1e-3 * min(1, step / 30),
                  "tokens_per_s": 5000 + step, "tokens_seen": step * 512, "elapsed_s": step / 10}
        if step % 50 == 0:
            record["val_loss"] = 4.2 / math.log(step)
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_plot_metrics(tmp_path, capsys):
    run = write_metrics(tmp_path / "run")
    assert run_cli("plot-metrics", run) == 0
    assert (run / "metrics.png").stat().st_size > 10_000
    assert run_cli("plot-metrics", run, "--out", tmp_path / "m.png") == 0
    assert (tmp_path / "m.png").is_file()


def test_plot_metrics_bad_input(tmp_path, capsys):
    assert run_cli("plot-metrics", tmp_path / "nowhere") == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    run = write_metrics(tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{oops\n")
    assert run_cli("plot-metrics", run) == 2
    assert "metrics.jsonl:11:" in capsys.readouterr().err

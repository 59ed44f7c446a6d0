"""A translator warm-started from a pre-trained encoder and decoder (training/warm_start.py).

The parts are random but far from degenerate (init_std 0.3: every output depends on every input),
so "the translator's encoder computes what the encoder run computes" is a real check of the copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanoformer.cli import main
from nanoformer.config import ModelConfig
from nanoformer.errors import UserError
from nanoformer.models import EncoderModel, DecoderModel, Seq2SeqTransformer
from nanoformer.training.warm_start import warm_start
from nanoformer.run_config import build_run_config
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import save_checkpoint

from test_translation_cli import WORDS, toy_corpus

SHAPE = dict(d_model=32, n_heads=4, d_ff=64, max_positions=40, dropout=0.0, activation="gelu", norm_position="pre",
             positional="learned", init_std=0.3)


def part(folder: Path, arch: str, texts: list[str], seed: int, **changes) -> Path:
    """A pre-trained run folder (one checkpoint) of `arch` with its own character tokenizer."""
    tok = Tokenizer.train_char(texts=texts)
    sp = tok.special_ids()
    values = {**SHAPE, "n_layers": 2 if arch == "encoder" else 3, **changes}
    if arch == "encoder":
        values.setdefault("type_vocab_size", 2)
    config = ModelConfig(arch=arch, vocab_size=tok.vocab_size, pad_id=sp["pad"], unk_id=sp["unk"], bos_id=sp["bos"],
                         eos_id=sp["eos"], mask_id=sp["mask"], cls_id=sp["cls"], sep_id=sp["sep"], **values)
    torch.manual_seed(seed)
    model = (EncoderModel if arch == "encoder" else DecoderModel)(config).eval()
    with torch.no_grad():  # learned tables start near zero: give them weight, so the copy is tested
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    save_checkpoint(folder / "checkpoints" / "best", model, {"model": config.to_dict()}, tok)
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parts")
    toy_corpus(root / "corpus")
    german = (root / "corpus" / "train.de").read_text(encoding="utf-8").splitlines()
    english = (root / "corpus" / "train.en").read_text(encoding="utf-8").splitlines()
    return {
        "root": root,
        "encoder": part(root / "encoder", "encoder", german, seed=1),
        "decoder": part(root / "decoder", "decoder", english, seed=2),
        "wide": part(root / "wide", "decoder", english, seed=3, d_model=48, n_heads=4),
    }


def sections(parts: dict[str, Path], **model) -> dict:
    return {
        "model": {"init_encoder": str(parts["encoder"]), "init_decoder": str(parts["decoder"]), **model},
        "data": {"kind": "translation", "path": str(parts["root"] / "corpus"), "src_lang": "de", "tgt_lang": "en",
                 "max_tokens": 400, "max_length": 24},
        "train": {"max_steps": 2, "device": "cpu"},
    }


def translator(parts: dict[str, Path], cross: str = "random", seed: int = 0) -> tuple[Seq2SeqTransformer, dict]:
    run = build_run_config(sections(parts, cross_attention_init=cross))
    source, target = Tokenizer.load(parts["encoder"] / "checkpoints" / "best"), Tokenizer.load(
        parts["decoder"] / "checkpoints" / "best")
    config = run.model.replace(vocab_size=source.vocab_size, target_vocab_size=target.vocab_size,
                               share_embeddings=False, **{f"{k}_id": v for k, v in target.special_ids().items()})
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(config).eval()
    return model, run.extra["warm_start"]


def load(folder: Path, cls):
    """The pre-trained part as its own family's model."""
    from nanoformer.api import load_config
    from nanoformer.training.checkpoint import load_model_state

    model = cls(load_config(folder))
    load_model_state(folder, model)
    return model.eval()


def test_the_parts_fix_the_translators_shape(parts):
    run = build_run_config(sections(parts))
    assert (run.model.n_encoder_layers, run.model.n_decoder_layers) == (2, 3)
    assert run.model.d_model == 32 and run.model.positional == "learned" and run.model.max_positions == 40
    assert run.data.joint_vocab is False
    assert run.extra["warm_start"]["cross_attention_init"] == "random"


def test_the_encoder_computes_what_the_encoder_run_computes(parts):
    model, record = translator(parts)
    bert = load(parts["encoder"], EncoderModel)
    src = torch.randint(7, model.config.vocab_size, (3, 11))
    before = model.encode(src)
    warm_start(model, record)
    after = model.encode(src)
    expected = bert.encode(src, token_type_ids=torch.zeros_like(src))  # segment A, as pre-trained
    assert not torch.allclose(before, expected, atol=1e-3)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    changed = bert.encode(torch.cat([src[:, :1] % 7 + 7, src[:, 1:]], 1), token_type_ids=torch.zeros_like(src))
    assert not torch.allclose(changed[:, -1], expected[:, -1], atol=1e-3)  # the last state reads the first token


def test_zero_cross_attention_makes_the_decoder_the_language_model(parts):
    model, record = translator(parts, cross="zero")
    warm_start(model, record)
    gpt = load(parts["decoder"], DecoderModel)
    src = torch.randint(7, model.config.vocab_size, (2, 9))
    tgt = torch.randint(7, model.config.tgt_vocab_size, (2, 12))
    logits = model.decode(tgt, model.encode(src))
    torch.testing.assert_close(logits, gpt(tgt), rtol=1e-5, atol=1e-5)
    changed = gpt(torch.cat([tgt[:, :1] % 7 + 7, tgt[:, 1:]], 1))
    assert not torch.allclose(changed[:, -1], logits[:, -1], atol=1e-3)  # the last position reads the first


def test_only_the_cross_attention_keeps_its_fresh_weights(parts):
    fresh, _ = translator(parts, seed=5)
    model, record = translator(parts, seed=5)
    copied = warm_start(model, record)
    fresh_state = fresh.state_dict()
    same = {name for name, t in model.state_dict().items() if torch.equal(t, fresh_state[name])}
    new = {name for name in fresh_state if ".cross_attn" in name}
    assert new and same == new  # "random": the cross-attention as the translator's init made it, nothing else
    assert not any("mlm_head" in name for name in copied["init_encoder"])
    assert "embeddings.token_types.weight" in copied["init_encoder"]


def test_self_cross_attention_copies_the_self_attention_beside_it(parts):
    model, record = translator(parts, cross="self")
    warm_start(model, record)
    d = model.config.d_model
    for layer in model.decoder.layers:
        torch.testing.assert_close(layer.cross_attn.q_proj.weight, layer.self_attn.qkv_proj.weight[:d])
        torch.testing.assert_close(layer.cross_attn.kv_proj.weight, layer.self_attn.qkv_proj.weight[d:])
        torch.testing.assert_close(layer.cross_attn.out_proj.bias, layer.self_attn.out_proj.bias)
        torch.testing.assert_close(layer.cross_attn_norm.weight, layer.self_attn_norm.weight)


@pytest.mark.parametrize("model, message", [
    ({"init_encoder": "{decoder}"}, "init_encoder = '{decoder}' is a 'decoder' run; init_encoder takes an encoder run"),
    ({"init_decoder": "{encoder}"}, "init_decoder = '{encoder}' is a 'encoder' run; init_decoder takes a decoder run"),
    ({"init_decoder": "{wide}"}, "has d_model = 32 but init_decoder"),
    ({"d_model": 64}, "[model] d_model = 64, but init_decoder"),
    ({"n_decoder_layers": 6}, "[model] n_decoder_layers = 6, but init_decoder"),
    ({"max_positions": 64}, "max_positions = 64, but the pre-trained position tables hold 40"),
    ({"cross_attention_init": "copy"}, "cross_attention_init = 'copy'; expected one of"),
    ({"init_encoder": "{root}/nowhere"}, "init_encoder = '{root}/nowhere': no such folder"),
    ({"preset": "seq2seq-small"}, "preset = 'seq2seq-small' and init_encoder, init_decoder both give the shape"),
])
def test_parts_that_do_not_fit_are_one_line_errors(parts, model, message):
    names = {key: str(value) for key, value in parts.items()}
    given = {key: value.format(**names) if isinstance(value, str) else value for key, value in model.items()}
    with pytest.raises(UserError) as error:
        build_run_config(sections(parts, **given))
    assert message.format(**names) in str(error.value) and "\n" not in str(error.value)


def test_joint_vocab_and_non_translation_runs_are_refused(parts):
    config = sections(parts)
    config["data"]["joint_vocab"] = True
    with pytest.raises(UserError, match="joint_vocab = true, but the pre-trained parts bring their own tokenizers"):
        build_run_config(config)


def test_train_translate_and_resume_a_warm_started_translator(parts, tmp_path, capsys):
    config = tmp_path / "warm.toml"
    config.write_text(f"""
[model]
init_encoder = "{parts['encoder']}"
init_decoder = "{parts['decoder']}"
cross_attention_init = "zero"
dropout = 0.0
[data]
kind = "translation"
path = "{parts['root'] / 'corpus'}"
src_lang = "de"
tgt_lang = "en"
max_tokens = 400
max_length = 24
[train]
max_steps = 6
eval_interval = 3
lr = 1e-3
device = "cpu"
""", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--quiet", "--set", "train.max_steps=3"]) == 0
    assert main(["train", str(config), "--out", str(run_dir), "--quiet", "--resume"]) == 0
    last = run_dir / "checkpoints" / "last"
    saved = json.loads((last / "config.json").read_text())
    assert saved["warm_start"]["init_encoder"] == str((parts["encoder"] / "checkpoints" / "best").resolve())
    assert json.loads((last / "trainer_state.json").read_text())["state"]["step"] == 6
    source = json.loads((last / "source_tokenizer.json").read_text())["model"]["vocab"]
    target = json.loads((last / "tokenizer.json").read_text())["model"]["vocab"]
    assert source == json.loads((parts["encoder"] / "checkpoints/best/tokenizer.json").read_text())["model"]["vocab"]
    assert target == json.loads((parts["decoder"] / "checkpoints/best/tokenizer.json").read_text())["model"]["vocab"]
    assert "ß" in source and "ß" not in target  # each side its own language's characters
    capsys.readouterr()
    assert main(["translate", str(run_dir), " ".join(list(WORDS)[:3]), "--beam-size", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_a_tag_token_grows_the_warm_started_source_vocabulary_by_one_row(parts, tmp_path):
    from safetensors.torch import load_file

    from test_back_translation import synthetic_pairs

    stem = synthetic_pairs(tmp_path, 200)
    config = sections(parts)
    config["data"]["synthetic"] = str(stem)
    config["train"].update(max_steps=1, lr=1e-12, min_lr=0.0, warmup_steps=0, weight_decay=0.0)
    from nanoformer.recipes import train

    train(build_run_config(config), tmp_path / "run", progress=False)
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    bert = load_file(str(parts["encoder"] / "checkpoints" / "best" / "model.safetensors"))
    tokens, pretrained = weights["src_embeddings.tokens.weight"], bert["embeddings.tokens.weight"]
    assert tokens.shape[0] == pretrained.shape[0] + 1  # the <bt> row
    folded = pretrained + bert["embeddings.token_types.weight"][0]
    torch.testing.assert_close(tokens[:-1], folded, rtol=0, atol=1e-6)  # lr 1e-12: one step moves nothing visible


def test_an_encoder_whose_tokenizer_numbers_the_specials_otherwise_is_a_one_line_error(parts, tmp_path, capsys):
    """A BERT vocabulary laid out as Google's ([PAD] 0, [UNK] 100, [CLS] 101, ...) cannot share our target's ids."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    german = sorted(set("".join((parts["root"] / "corpus" / "train.de").read_text(encoding="utf-8").split())))
    vocab = {"[PAD]": 0, **{f"[unused{i}]": i for i in range(1, 100)}, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102,
             "[MASK]": 103, **{ch: 104 + i for i, ch in enumerate(german)}}
    hf = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = Tokenizer(hf)
    config = ModelConfig(arch="encoder", vocab_size=len(vocab), pad_id=0, unk_id=100, cls_id=101, sep_id=102,
                         mask_id=103, n_layers=2, **SHAPE)
    save_checkpoint(tmp_path / "google" / "checkpoints" / "best", EncoderModel(config), {"model": config.to_dict()}, tok)
    config_file = tmp_path / "warm.toml"
    config_file.write_text(f"""
[model]
init_encoder = "{tmp_path / 'google'}"
init_decoder = "{parts['decoder']}"
[data]
kind = "translation"
path = "{parts['root'] / 'corpus'}"
src_lang = "de"
tgt_lang = "en"
max_tokens = 400
max_length = 24
[train]
max_steps = 1
device = "cpu"
""", encoding="utf-8")
    capsys.readouterr()
    assert main(["train", str(config_file), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "disagree on special-token ids" in err and "init_encoder" in err and len(err.splitlines()) == 1, err


def test_the_ablations_random_control_has_the_warm_started_translators_shape():
    """configs/ko_en/translator_random.toml is the control of benchmarks/ko_en_warm_start.py: it must
    have the shape the recipe's two parts give the warm-started translator, or the ablation compares
    two architectures instead of two initialisations."""
    from nanoformer.run_config import load_run_config
    from nanoformer.training.warm_start import SHARED_FIELDS

    configs = Path(__file__).resolve().parent.parent / "configs" / "ko_en"
    encoder = load_run_config(configs / "encoder_ko.toml").model
    decoder = load_run_config(configs / "decoder_en.toml").model
    control = load_run_config(configs / "translator_random.toml").model
    for name in SHARED_FIELDS:
        if name == "final_norm":
            assert control.use_final_norm == encoder.use_final_norm == decoder.use_final_norm
        else:
            assert getattr(control, name) == getattr(encoder, name) == getattr(decoder, name), name
    assert (control.n_encoder_layers, control.n_decoder_layers) == (encoder.n_layers, decoder.n_layers)
    assert control.max_positions == min(encoder.max_positions, decoder.max_positions)
    assert control.tie_embeddings == decoder.tie_embeddings and control.output_bias == decoder.output_bias
    assert not control.share_embeddings

"""The encoder's heads: masked-LM logits on selected positions, the classification head ([CLS] pooler
or mean pooling), its config fields and parameter count, checkpoints, init_from, and the shipped
BERT configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nanoformer
from nanoformer.config import ModelConfig, closed_form_parameter_count
from nanoformer.errors import UserError
from nanoformer.models import EncoderModel, build_model
from nanoformer.recipes.classification import load_finetune_config, load_pretrained
from nanoformer.run_config import load_run_config
from nanoformer.training.checkpoint import save_checkpoint

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def small(**changes) -> ModelConfig:
    return ModelConfig.from_preset("tiny-encoder", vocab_size=50, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                                   max_positions=24, **changes)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 50, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("changes", [{}, dict(num_labels=3), dict(num_labels=2, classifier_pooling="mean"),
                                     dict(num_labels=4, bias=False, tie_embeddings=False)])
def test_parameter_count_closed_form(changes):
    config = small(**changes)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == closed_form_parameter_count(config)
    assert (model.mlm_head is None) == bool(config.num_labels) == model.is_classifier


@pytest.mark.parametrize("changes", [{}, dict(norm_position="pre"), dict(positional="rope"), dict(positional="alibi"),
                                     dict(attention_impl="math"), dict(norm="rmsnorm", activation="swiglu")])
def test_masked_positions_select_rows_of_the_full_logits(changes):
    """With masked_positions the last layer computes the selected positions alone: the same logits
    and the same gradients as the full forward, for every position scheme and norm order."""
    torch.manual_seed(0)
    model = EncoderModel(small(**changes)).eval()
    ids, mask = batch()
    selected = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    selected[0] = False  # a row with nothing selected
    selected[2, 1] = True
    full = model(ids, attention_mask=mask)
    part = model(ids, attention_mask=mask, masked_positions=selected)
    assert part.shape == (int(selected.sum()), 50)
    torch.testing.assert_close(part, full[selected], atol=2e-6, rtol=0)
    target = torch.randn(part.shape, generator=torch.Generator().manual_seed(2))
    full_grads = torch.autograd.grad((full[selected] * target).sum(), list(model.parameters()), allow_unused=True)
    part_grads = torch.autograd.grad((part * target).sum(), list(model.parameters()), allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), full_grads, part_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # nothing selected at all
        assert model(ids, attention_mask=mask, masked_positions=torch.zeros_like(selected)).shape == (0, 50)


def test_cls_classifier_computes_the_last_layer_for_cls_alone():
    torch.manual_seed(0)
    model = EncoderModel(small(num_labels=3)).eval()
    ids, mask = batch()
    with torch.no_grad():
        hidden = model.encode(ids, mask)
        assert torch.allclose(model(ids, attention_mask=mask), model.classifier(hidden), atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_logits_ignore_padding(pooling):
    torch.manual_seed(0)
    model = EncoderModel(small(num_labels=3, classifier_pooling=pooling)).eval()
    ids, mask = batch()
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)
        alone = model(ids[2:, :4], attention_mask=mask[2:, :4])
    assert logits.shape == (3, 3)
    assert torch.allclose(logits[2:], alone, atol=1e-5)
    with pytest.raises(ValueError, match="masked_positions is for masked-LM"):
        model(ids, masked_positions=mask.bool())


def test_classifier_config_is_validated():
    with pytest.raises(ValueError, match="labels has 2 names"):
        small(num_labels=3, labels=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        small(num_labels=1)
    with pytest.raises(ValueError, match="classifier_pooling"):
        small(num_labels=2, classifier_pooling="max")
    config = small(num_labels=2, labels=["neg", "pos"])
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_classifier_checkpoint_loads_and_init_from_keeps_the_encoder(tmp_path):
    torch.manual_seed(0)
    pretrained = EncoderModel(small())
    save_checkpoint(tmp_path / "mlm", pretrained, {"model": pretrained.config.to_dict()})
    classifier = EncoderModel(small(num_labels=2, labels=["neg", "pos"]))
    head = classifier.classifier.out.weight.clone()
    load_pretrained(classifier, tmp_path / "mlm")
    theirs = pretrained.state_dict()
    for key, tensor in classifier.state_dict().items():
        if key.startswith("classifier."):
            assert key not in theirs
        else:
            assert torch.equal(tensor, theirs[key]), key
    assert torch.equal(classifier.classifier.out.weight, head)  # the head stays fresh
    save_checkpoint(tmp_path / "cls", classifier, {"model": classifier.config.to_dict()})
    loaded, _ = nanoformer.load(tmp_path / "cls")
    assert loaded.is_classifier and loaded.config.labels == ["neg", "pos"]
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask), classifier.eval()(ids, attention_mask=mask))


def test_shipped_configs_parse(tmp_path):
    for name, norm_position in (("bert_mlm_ko", "pre"), ("bert_mlm_en", "pre")):
        run = load_run_config(CONFIGS / f"{name}.toml")
        assert run.data_kind == "mlm" and run.model.arch == "encoder" and run.model.norm_position == norm_position
        assert run.data.max_length <= run.model.max_positions
    assert load_run_config(CONFIGS / "bert_mlm_ko.toml").size == "auto"  # sized for its budget; bert_mlm_en is fixed
    model = EncoderModel(ModelConfig.from_preset("bert-mini", vocab_size=200, n_layers=1, max_positions=128))
    save_checkpoint(tmp_path / "ckpt", model, {"model": model.config.to_dict()})
    tapt = load_run_config(CONFIGS / "sst2_mlm.toml", [f"model.init_from={str(tmp_path / 'ckpt')!r}"])
    assert tapt.data_kind == "mlm" and tapt.data.label_first and tapt.data.path is None
    assert tapt.model.n_layers == 1 and tapt.data.max_length <= tapt.model.max_positions
    for name in ("sst2_finetune", "stylekqc_finetune"):
        run = load_finetune_config(CONFIGS / f"{name}.toml", init_from=str(tmp_path / "ckpt"))
        assert run.data_kind == "classification" and run.extra["init_from"] == str((tmp_path / "ckpt").resolve())
        assert run.model.d_model == 256 and run.model.n_layers == 1  # the architecture is the checkpoint's
    with pytest.raises(UserError, match=r"\[model\] n_layers cannot change with init_from"):
        load_finetune_config(CONFIGS / "sst2_finetune.toml", ["model.n_layers=2"], init_from=str(tmp_path / "ckpt"))
    scratch = load_finetune_config(CONFIGS / "sst2_finetune.toml", ["model.preset=bert-mini"], init_from="none")
    assert "init_from" not in scratch.extra and scratch.model.n_layers == 4


def test_classification_loss_rdrop_and_label_smoothing():
    """R-Drop adds a symmetric KL between two dropout passes: zero without dropout, positive with
    it; evaluation is always the plain cross-entropy; label smoothing applies in training only."""
    import torch.nn.functional as F

    from nanoformer.recipes.classification import classification_loss

    ids, mask = batch()
    data = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}
    torch.manual_seed(0)
    deterministic = EncoderModel(small(num_labels=3, classifier_pooling="mean", dropout=0.0))
    plain = F.cross_entropy(deterministic(ids, mask), data["labels"])
    assert torch.allclose(classification_loss(rdrop=5.0)(deterministic, data), plain, atol=1e-6)
    smoothed = F.cross_entropy(deterministic(ids, mask), data["labels"], label_smoothing=0.2)
    assert torch.allclose(classification_loss(label_smoothing=0.2)(deterministic, data), smoothed, atol=1e-6)
    assert torch.allclose(classification_loss(0.2, 5.0)(deterministic.eval(), data), plain, atol=1e-6)

    torch.manual_seed(0)
    noisy = EncoderModel(small(num_labels=3, classifier_pooling="mean", dropout=0.3))
    torch.manual_seed(1)
    without = classification_loss(rdrop=0.0)(noisy, data)
    torch.manual_seed(1)
    with_kl = classification_loss(rdrop=100.0)(noisy, data)
    assert with_kl > without + 1e-3  # two different dropout masks disagree, so the KL term is > 0
    with_kl.backward()
    assert noisy.classifier.out.weight.grad.abs().sum() > 0

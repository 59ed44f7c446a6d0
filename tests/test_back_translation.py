"""Back-translation: sampled translations from a reverse model, and tagged synthetic pairs mixed in at a ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanoformer.data.back_translation import mix

from test_translation_cli import WORDS, run, write_config
from tiny_checkpoints import write


def test_the_mix_keeps_the_ratio_and_tags_only_synthetic_sources():
    real = ([[10, 11]] * 100, [[20]] * 100)
    synthetic = ([[30 + i % 5] for i in range(450)], [[40]] * 450)
    (src, tgt), record = mix(real, synthetic, ratio=1.5, tag_id=99, tag="<bt>", seed=0)
    tagged = [s for s in src if s[0] == 99]
    assert record.real_copies == 3 and len(tagged) == record.synthetic == 450  # 450 / (3 x 100) = 1.5
    assert len(src) - len(tagged) == 300 and all(s == [10, 11] for s in src if s[0] != 99)
    assert all(s[1:] in ([30], [31], [32], [33], [34]) for s in tagged) and len(src) == len(tgt)
    (src, _), record = mix(real, synthetic, ratio=0.5, tag_id=None, tag="", seed=0)
    assert record.real_copies == 9 and record.synthetic == 450 and not any(s[0] == 99 for s in src)
    with pytest.warns(UserWarning, match="only 450 back-translated pairs for 100 real ones"):
        _, record = mix(real, synthetic, ratio=10.0, tag_id=99, tag="<bt>", seed=0)
    assert (record.real_copies, record.synthetic) == (1, 450)
    (_, _), few = mix(real, synthetic, ratio=2.0, tag_id=99, tag="<bt>", seed=1)
    assert few.synthetic == 400 and few.real_copies == 2  # round(450 / 200) = 2 copies: 400 of the 450


@pytest.fixture(scope="module")
def translator(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("bt") / "translator", "encoder-decoder", seed=2)


def test_sampling_is_seeded_and_top_k_1_is_greedy(translator):
    from nanoformer.api import load

    model, tokenizer = load(translator)
    src = torch.tensor([tokenizer.encode("I go to school.") + [tokenizer.eos_id]] * 4)
    greedy = model.generate(src, max_new_tokens=12)
    top1 = model.generate(src, max_new_tokens=12, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)

    def sample(seed: int) -> torch.Tensor:
        return model.generate(src, max_new_tokens=12, do_sample=True, temperature=1.5,
                              generator=torch.Generator().manual_seed(seed))

    first = sample(1)
    assert torch.equal(first, sample(1))
    assert not torch.equal(first, sample(2)) and len({tuple(row.tolist()) for row in first}) > 1
    with pytest.raises(ValueError, match="use beam_size = 1"):
        model.generate(src, beam_size=2, do_sample=True)


def test_translate_sample_writes_one_line_per_input(translator, tmp_path, capsys):
    mono = tmp_path / "mono.en"
    mono.write_text("I go to school.\n\nThe cat sat.\n", encoding="utf-8")
    out = tmp_path / "synthetic.ko"
    args = ["translate", translator, "--input", mono, "--output", out, "--sample", "--top-k", "5", "--quiet"]
    assert run(capsys, *args, "--seed", "4")[0] == 0
    first = out.read_text(encoding="utf-8")
    assert len(first.split("\n")) == 4 and first.split("\n")[1] == ""  # the empty line stays empty
    assert run(capsys, *args, "--seed", "4")[0] == 0 and out.read_text(encoding="utf-8") == first
    code, _, err = run(capsys, "translate", translator, "x", "--top-k", "5")
    assert code == 2 and "add --sample" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "translate", translator, "x", "--sample", "--beam-size", "4")
    assert code == 2 and "drop --beam-size 4" in err


def synthetic_pairs(folder: Path, n: int, src_lines: int | None = None) -> Path:
    """n back-translated pairs for the toy de->en task: noisy German sources, real English targets."""
    german = list(WORDS)
    src = [" ".join(german[(i + j) % len(german)] for j in range(3)) for i in range(n)]
    tgt = [" ".join(WORDS[w] for w in s.split()) for s in src]
    (folder / "bt.de").write_text("\n".join(src[: src_lines or n]) + "\n", encoding="utf-8")
    (folder / "bt.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return folder / "bt"


def test_training_mixes_tagged_pairs_and_records_the_mix(tmp_path, capsys):
    config = write_config(tmp_path, steps=2)
    stem = synthetic_pairs(tmp_path, 800)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", config, "--out", run_dir, "--quiet", "--set", f"data.synthetic='{stem}'",
                       "--set", "data.synthetic_ratio=2.0")
    assert code == 0, err
    assert "training mix: 400 real pairs + 800 back-translated (tagged '<bt>'" in err
    saved = json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())
    record = saved["data"]["synthetic_mix"]
    assert (record["real"], record["synthetic"], record["ratio"]) == (400, 800, 2.0)
    tokenizer = json.loads((run_dir / "tokenizer.json").read_text())
    tags = [t for t in tokenizer["added_tokens"] if t["content"] == "<bt>"]
    assert tags and tags[0]["id"] == record["tag_id"] == saved["model"]["vocab_size"] - 1
    code, _, err = run(capsys, "train", config, "--out", run_dir, "--quiet", "--resume", "--set",
                       "train.max_steps=4", "--set", f"data.synthetic='{stem}'", "--set", "data.synthetic_ratio=2.0")
    assert code == 0, err  # the tag is found again in the saved tokenizer


@pytest.mark.parametrize("change, message", [
    ({"src_lines": 40}, "bt.de has 40 lines but"),
    ({"tag": "a"}, "synthetic_tag = 'a' is already a token of the source vocabulary"),  # a byte of the BPE
    ({"tag": "<s>"}, "synthetic_tag = '<s>' is already a token of the source vocabulary (id 2)"),
    ({"tag": "two words"}, "synthetic_tag = 'two words'; expected one word without spaces"),
    ({"ratio": 0}, "synthetic_ratio = 0; expected a number > 0"),
    ({"stem": "missing/bt"}, "synthetic = 'missing/bt': expected"),
    ({"empty": True}, "bt.de: file is empty"),
])
def test_bad_synthetic_data_is_a_one_line_error(tmp_path, capsys, change, message):
    config = write_config(tmp_path, steps=1)
    stem = synthetic_pairs(tmp_path, 50, change.get("src_lines"))
    if change.get("empty"):
        (tmp_path / "bt.de").write_text("", encoding="utf-8")
    args = ["--set", f"data.synthetic='{change.get('stem', stem)}'"]
    if "tag" in change:
        args += ["--set", f"data.synthetic_tag='{change['tag']}'"]
    if "ratio" in change:
        args += ["--set", f"data.synthetic_ratio={change['ratio']}"]
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "run", "--quiet", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err

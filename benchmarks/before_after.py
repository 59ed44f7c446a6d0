"""This checkout's nanoformer against an earlier one, in one process, on the same weights.

For refactors that must not cost speed (issue 22): the earlier tree's package is copied to a
temporary folder as `nanoformer_before` (its imports renamed), both versions build the same
models, the earlier one loads the current one's weights, and each measurement alternates the
two versions round by round, so that the machine's drift hits both alike. Every line also says
whether both versions produced the same outputs: identical tokens, or training losses equal to
1e-6 relative (MKL's float sums depend on buffer alignment, so bitwise equality of a loss varies
from run to run, for either version).

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py --before /tmp/before --out benchmarks/results/before_after.jsonl
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, write_result  # noqa: E402

import nanoformer as current  # noqa: E402


def import_before(tree: Path, into: Path):
    """The package of `tree` (a checkout) as `nanoformer_before`."""
    target = into / "nanoformer_before"
    shutil.copytree(tree / "nanoformer", target)
    for path in target.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\bnanoformer\.", "nanoformer_before.", text)
        text = re.sub(r"\bfrom nanoformer import\b", "from nanoformer_before import", text)
        text = re.sub(r"^(\s*)import nanoformer$", r"\1import nanoformer_before as nanoformer", text, flags=re.M)
        path.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(into))
    import nanoformer_before

    return nanoformer_before


GPT = dict(arch="decoder", vocab_size=8192, d_model=384, n_heads=6, n_layers=6, d_ff=1536, max_positions=256,
           dropout=0.0, activation="gelu_tanh", norm_position="pre", positional="learned", tie_embeddings=True,
           init="gpt2", pad_id=None)
MT = dict(arch="encoder-decoder", vocab_size=8000, d_model=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3,
          n_layers=3, d_ff=1024, max_positions=256, dropout=0.1, pad_id=0, bos_id=1, eos_id=2, norm_position="pre",
          tie_embeddings=True)


def pair(before, config: dict):
    ours = current.build_model(current.ModelConfig(**config))
    theirs = before.build_model(before.ModelConfig(**config))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def cases(before) -> list[tuple[str, callable, torch.nn.Module, torch.nn.Module, int, str]]:
    torch.manual_seed(0)
    out = []
    gpt_new, gpt_old = pair(before, GPT)
    for batch in (1, 8):
        prompt = torch.randint(0, 8192, (batch, 16))
        out.append((f"gpt_generate_b{batch}", lambda m, p=prompt: m.eval().generate(p, max_new_tokens=128),
                    gpt_new, gpt_old, batch * 128, "tokens"))
    ids = torch.randint(0, 8192, (8, 129))

    def gpt_train(m):
        m.train()
        loss = m(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        return loss.detach()

    out.append(("gpt_train_step_8x128", gpt_train, gpt_new, gpt_old, 8 * 128, "tokens"))
    mt_new, mt_old = pair(before, MT)
    src = torch.randint(3, 8000, (16, 20))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[::3, 14:] = False  # padded sources
    for beam in (1, 4):
        out.append((f"seq2seq_beam{beam}_b16", lambda m, k=beam: m.eval().generate(src, 32, mask, beam_size=k, bad_ids=[0]),
                    mt_new, mt_old, 16, "sentences"))
    tgt = torch.randint(3, 8000, (16, 18))

    def mt_train(m):
        m.train()
        torch.manual_seed(1)  # the same dropout masks for both versions
        loss = m(src, tgt[:, :-1], src_padding_mask=mask, targets=tgt[:, 1:])
        loss.backward()
        return loss.detach()

    out.append(("seq2seq_train_step_b16", mt_train, mt_new, mt_old, 16, "pairs"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout of the earlier version (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=9, help="timed calls per version and case, alternating")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = import_before(Path(args.before), Path(tmp))
        peaks = matmul_peaks()
        for name, run, ours, theirs, units, unit in cases(before):
            mine, earlier = run(ours), run(theirs)  # generated ids, or the training loss
            # Tokens must be equal; a loss to float rounding (MKL's sums depend on buffer alignment).
            identical = bool(torch.equal(mine, earlier) if "train" not in name
                             else torch.allclose(mine, earlier, rtol=1e-6, atol=0))
            ours.zero_grad(set_to_none=True)
            theirs.zero_grad(set_to_none=True)
            times = {"after": [], "before": []}
            for r in range(args.rounds):
                order = [("after", ours), ("before", theirs)] if r % 2 == 0 else [("before", theirs), ("after", ours)]
                for side, model in order:
                    start = time.perf_counter()
                    run(model)
                    times[side].append(time.perf_counter() - start)
                    model.zero_grad(set_to_none=True)
            after, before_s = statistics.median(times["after"]), statistics.median(times["before"])
            write_result("before_after", {
                "case": name, "before_tree": str(args.before), "rounds": args.rounds,
                "matmul_peaks_gflops": {k: round(v, 1) for k, v in peaks.items()},
                f"after_{unit}_per_s": round(units / after, 1), f"before_{unit}_per_s": round(units / before_s, 1),
                "ratio_after_over_before": round(before_s / after, 3), "same_outputs": identical,
            }, args.out)


if __name__ == "__main__":
    main()

"""int8 against float32 decoding in nanoformer, side by side in one process, and the size on disk.

The GPT of benchmarks/gpt_vs_hf.py (6 x 384, vocabulary 8,192) generates 128 tokens after a
16-token prompt at batch 1 and 8; the translator of benchmarks/translate_vs_hf.py (256 wide,
3 + 3 layers, vocabulary 8,000) decodes 16 sentences greedily and with beam 4. Each case builds
the float32 model, quantizes a copy (`nanoformer.quantize`), and alternates the two call by
call. Random weights: this measures speed and size, not quality (the quality of int8 is measured
on trained models in docs/benchmarks.md).

    python benchmarks/int8_speed.py --out benchmarks/results/int8_speed.jsonl
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, write_result  # noqa: E402

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.models import build_model  # noqa: E402
from nanoformer.quantize import quantize  # noqa: E402
from nanoformer.training.checkpoint import save_checkpoint  # noqa: E402

GPT = dict(arch="decoder", vocab_size=8192, d_model=384, n_heads=6, n_layers=6, d_ff=1536, max_positions=256,
           dropout=0.0, activation="gelu_tanh", norm_position="pre", positional="learned", tie_embeddings=True,
           init="gpt2", pad_id=None)
MT = dict(arch="encoder-decoder", vocab_size=8000, d_model=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3,
          n_layers=3, d_ff=1024, max_positions=256, dropout=0.0, pad_id=0, bos_id=1, eos_id=2, norm_position="pre",
          tie_embeddings=True, share_embeddings=True, positional="sinusoidal", scale_embeddings=True)


def size_on_disk(model, config: dict) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "ckpt", model, {"model": model.config.to_dict()}, None)
        return (path / "model.safetensors").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    peaks = matmul_peaks()
    cases = []
    gpt = build_model(ModelConfig(**GPT)).eval()
    gpt8 = quantize(copy.deepcopy(gpt))
    for batch in (1, 8):
        prompt = torch.randint(0, 8192, (batch, 16))
        cases.append((f"gpt_generate_b{batch}", gpt, gpt8, lambda m, p=prompt: m.generate(p, max_new_tokens=128, eos_id=None),
                      batch * 128, "tokens", GPT))
    mt = build_model(ModelConfig(**MT)).eval()
    mt8 = quantize(copy.deepcopy(mt))
    src = torch.randint(3, 8000, (16, 20))
    for beam in (1, 4):
        cases.append((f"seq2seq_beam{beam}_b16", mt, mt8,
                      lambda m, k=beam: m.generate(src, 32, beam_size=k, bad_ids=[0, 2]), 16, "sentences", MT))
    for name, fp32, int8, run, units, unit, config in cases:
        times = {"fp32": [], "int8": []}
        with torch.no_grad():
            run(fp32), run(int8)
            for r in range(args.rounds):
                for side, model in ((("fp32", fp32), ("int8", int8)) if r % 2 == 0 else (("int8", int8), ("fp32", fp32))):
                    start = time.perf_counter()
                    run(model)
                    times[side].append(time.perf_counter() - start)
        fp, q = statistics.median(times["fp32"]), statistics.median(times["int8"])
        write_result("int8_speed", {
            "case": name, "rounds": args.rounds, "matmul_peaks_gflops": {k: round(v, 1) for k, v in peaks.items()},
            f"fp32_{unit}_per_s": round(units / fp, 1), f"int8_{unit}_per_s": round(units / q, 1),
            "ratio_int8_over_fp32": round(fp / q, 3),
            "size_fp32_mb": round(size_on_disk(fp32, config) / 2**20, 2), "size_int8_mb": round(size_on_disk(int8, config) / 2**20, 2),
        }, args.out)


if __name__ == "__main__":
    main()

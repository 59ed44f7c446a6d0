"""nanoformer's GPT versus Hugging Face GPT-2 of the same shape, side by side in one process.

Measures fp32 CPU training throughput (forward + loss + backward + AdamW step) and greedy
generation throughput (KV cache on both sides) at batch 1 and 8, and reports MFU against the
matmul peak measured in the same process.

    python benchmarks/gpt_vs_hf.py --out benchmarks/results.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import flops_per_token, matmul_peaks, median, time_interleaved, write_result  # noqa: E402

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.models import DecoderModel  # noqa: E402
from nanoformer.kernels.gemm import set_gemm_backend  # noqa: E402


def build_models(args: argparse.Namespace):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=args.vocab, n_positions=args.context, n_embd=args.d_model, n_layer=args.layers,
        n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
    )
    hf = GPT2LMHeadModel(hf_config)
    ours = DecoderModel(
        ModelConfig(
            arch="decoder", vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
            d_ff=4 * args.d_model, max_positions=args.context, dropout=0.0, activation="gelu_tanh",
            norm_position="pre", positional="learned", tie_embeddings=True, init="gpt2", pad_id=None,
        )
    )
    return hf, ours


def train_step_fn(model, optimizer, batch, targets, hf: bool):
    def step() -> None:
        if hf:
            logits = model(batch).logits
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        else:  # the library's training loss (recipes/lm.py): the same value, no logits tensor
            loss = model(batch, targets=targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def profile_step(model: DecoderModel, args: argparse.Namespace) -> None:
    """Where one training step of ours spends its time: the kernels, by self time."""
    from torch.profiler import ProfilerActivity, profile

    batch = torch.randint(0, args.vocab, (args.batch, args.context))
    targets = torch.randint(0, args.vocab, (args.batch, args.context))
    model.train()
    step = train_step_fn(model, torch.optim.AdamW(model.parameters(), lr=1e-4, **{args.optimizer: True}), batch, targets, False)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                        help="AdamW implementation on both sides: fused is the default of both HF's Trainer "
                             "(adamw_torch_fused, torch >= 2.8) and nanoformer's trainer")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="instead: torch.profiler over one of our training steps, kernels by self time")
    parser.add_argument("--gemm", choices=["auto", "onednn", "aten"], default="auto",
                        help="the GEMM of nanoformer's linear layers (nanoformer/kernels/gemm.py); HF's use torch's")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    set_gemm_backend(args.gemm)
    torch.manual_seed(0)
    hf, ours = build_models(args)
    if args.profile:
        profile_step(ours, args)
        return
    peaks = matmul_peaks()
    peak = max(peaks.values())

    if not args.skip_train:
        batch = torch.randint(0, args.vocab, (args.batch, args.context))
        targets = torch.randint(0, args.vocab, (args.batch, args.context))
        hf.train()
        ours.train()
        ours_fn = torch.compile(ours) if args.compile else ours
        runners = {
            "hf": train_step_fn(hf, torch.optim.AdamW(hf.parameters(), lr=1e-4, **{args.optimizer: True}), batch, targets, True),
            "nanoformer": train_step_fn(ours_fn, torch.optim.AdamW(ours.parameters(), lr=1e-4, **{args.optimizer: True}), batch, targets, False),
        }
        times = time_interleaved(runners, rounds=args.rounds, warmup=2 if args.compile else 1)
        tokens = args.batch * args.context
        fpt = flops_per_token(ours, args.context)
        result = {"phase": "train", "shape": vars(args), "matmul_peak_gflops": round(peak, 1),
                  "matmul_peaks_gflops": {k: round(v, 1) for k, v in peaks.items()}}
        for name, values in times.items():
            tps = tokens / median(values)
            result[f"{name}_tokens_per_s"] = round(tps, 1)
            result[f"{name}_mfu"] = round(tps * fpt / 1e9 / peak, 3)
        result["ratio_tokens_per_s"] = round(result["nanoformer_tokens_per_s"] / result["hf_tokens_per_s"], 3)
        write_result("gpt_vs_hf", result, args.out)

    if not args.skip_generate:
        hf.eval()
        ours.eval()
        for batch_size in (1, 8):
            prompt = torch.randint(0, args.vocab, (batch_size, args.prompt))
            new = args.new_tokens

            def run_hf() -> None:
                with torch.no_grad():
                    out = hf.generate(
                        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new,
                        min_new_tokens=new, pad_token_id=0, eos_token_id=None,
                    )
                assert out.shape[1] == args.prompt + new

            def run_ours() -> None:
                out = ours.generate(prompt, max_new_tokens=new, eos_id=None)
                assert out.shape[1] == args.prompt + new

            times = time_interleaved({"hf": run_hf, "nanoformer": run_ours}, rounds=max(3, args.rounds // 2))
            result = {"phase": "generate", "batch": batch_size, "new_tokens": new, "prompt": args.prompt}
            for name, values in times.items():
                result[f"{name}_tokens_per_s"] = round(batch_size * new / median(values), 1)
            result["ratio_tokens_per_s"] = round(result["nanoformer_tokens_per_s"] / result["hf_tokens_per_s"], 3)
            write_result("gpt_vs_hf", result, args.out)


if __name__ == "__main__":
    main()

"""The Korean -> English recipe (configs/ko_en/pipeline.toml), measured: stage times, scores, the note's sentences.

Runs the pipeline (or reads one that has run) and writes one result line: the CPU, each stage's
minutes (all sessions), the final model's sacreBLEU and chrF with signatures on JHE eval and the
Park news test set (beam 4), and its translations of the note's two sentences.

    python benchmarks/ko_en.py --out benchmarks/results/ko_en.jsonl                 # runs `make ko-en` first
    python benchmarks/ko_en.py --run-dir runs/ko-en --no-run --out benchmarks/results/ko_en.jsonl
    python benchmarks/ko_en.py --variant scratch --run-dir runs/ko-en-scratch --out ...   # the ablation

The ablation (`--variant`) gives each variant the recipe's total time (the sum of the shipped
stage budgets), spent on the stages it has, as its translator gets what the others leave:
  scratch   today's configs/ko_en.toml alone (no pre-training, no synthetic pairs)
  encoder   + the Korean encoder (translator warm-started from it; decoder from scratch)
  decoder   + the English GPT as the decoder
  bt        + back-translated pairs (no averaging)
  full      + averaging: the shipped recipe

With `--reuse RUN` (a finished full recipe), a variant reads the stages it shares with that run
(same config, same time) instead of training them again, and counts their minutes: "encoder" and
"decoder" then train only their translator (80 and 60 minutes), and "bt" is the full recipe's own
translator before averaging, only scored. The parts being the very same also isolates each step.

    python benchmarks/ko_en.py --variant encoder --reuse runs/ko-en --run-dir runs/ko-en-encoder --out ...

Run it on an otherwise idle machine: every stage trains for a fixed time, so a busy CPU buys
fewer steps and a worse model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from nanoformer.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTE_SENTENCES = ("나는 학교에 간다", "학교에 나는 간다")  # the note's sentence and its word-order example


def note_translations(model_dir: Path) -> dict[str, dict[str, str]]:
    """Greedy and beam-4 translations of the note's sentences."""
    from nanoformer.api import load
    from nanoformer.generation.translation import translate_texts
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import resolve_checkpoint

    folder = resolve_checkpoint(model_dir)
    model, tokenizer = load(folder)
    source = load_source_tokenizer(folder, tokenizer)
    return {f"beam {beam}": dict(zip(NOTE_SENTENCES, translate_texts(model, tokenizer, list(NOTE_SENTENCES),
                                                                     source_tokenizer=source, beam_size=beam)))
            for beam in (1, 4)}


VARIANTS = ("scratch", "encoder", "decoder", "bt", "full")


def variant_pipeline(variant: str, folder: Path, reuse: Path | None = None) -> tuple[Path, list[str]]:
    """A pipeline file for one ablation variant, with the recipe's total time (see the docstring).

    With `reuse` (a finished run of the full recipe), the stages the variant shares with it, the same
    config for the same time, are not trained again: the variant reads them from there, and its
    result counts their minutes. Returns the file and the names of the stages reused.
    """
    from nanoformer.recipes.pipeline import load_pipeline

    shipped = load_pipeline(ROOT / "configs" / "ko_en" / "pipeline.toml", folder)
    budgets = {s.name: s.options["max_time"] for s in shipped.stages if "max_time" in s.options}
    total_min = shipped.total_time_s() / 60
    configs = ROOT / "configs" / "ko_en"
    reused: list[str] = []
    if variant == "scratch":
        text = (f'[[stage]]\nname = "translator"\ntrain = "{ROOT / "configs" / "ko_en.toml"}"\n'
                f'max_time = "{total_min:g}m"\nset = ["train.max_steps=1000000"]\n')
        last = "translator"
    else:
        stages = ["encoder"] + (["decoder"] if variant != "encoder" else []) + \
                 (["reverse", "synthetic"] if variant in ("bt", "full") else [])
        used = sum(float(budgets[name].rstrip("m")) for name in stages)
        places = {"encoder": "{encoder}", "decoder": "{decoder}", "synthetic": "{synthetic}"}
        if reuse is not None:
            reused = list(stages)
            places = {"encoder": str(reuse / "encoder"), "decoder": str(reuse / "decoder"),
                      "synthetic": str(reuse / "synthetic" / "pairs")}
            stages = []
        sets = [f"model.init_encoder='{places['encoder']}'"]
        sets += [f"model.init_decoder='{places['decoder']}'"] if "decoder" in reused + stages else []
        sets += [f"data.synthetic='{places['synthetic']}'"] if "synthetic" in reused + stages else []
        text = shipped_stage_text(ROOT / "configs" / "ko_en" / "pipeline.toml", stages, configs)
        last = "translator"
        if variant == "bt" and reuse is not None:
            reused.append("translator")  # the full recipe's own translator, before averaging
            last = str(reuse / "translator")
        else:
            text += (f'[[stage]]\nname = "translator"\ntrain = "{configs / "translator.toml"}"\n'
                     f'max_time = "{total_min - used:g}m"\nset = {json.dumps(sets)}\n')
        if variant == "full":
            text += '[[stage]]\nname = "final"\naverage = "translator"\nlast = 5\n'
            last = "final"
    text += f'[[stage]]\nname = "scores"\nevaluate = "{last}"\nsplits = ["val", "test"]\nbeam_size = 4\n'
    path = folder / f"pipeline-{variant}.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, reused


def shipped_stage_text(pipeline: Path, names: list[str], configs: Path) -> str:
    """The shipped pipeline's [[stage]] tables of `names`, with their config paths made absolute."""
    from nanoformer.run_config import tomllib

    tables = [t for t in tomllib.loads(pipeline.read_text(encoding="utf-8"))["stage"] if t["name"] in names]
    out = []
    for table in tables:
        if "train" in table:
            table = {**table, "train": str(configs / table["train"])}
        out.append("[[stage]]\n" + "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n"
                                            for key, value in table.items()))
    return "".join(out)


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=str(ROOT / "configs" / "ko_en" / "pipeline.toml"))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "ko-en"))
    parser.add_argument("--budget", help="scale the stages to add up to this (e.g. 60m); default: as shipped")
    parser.add_argument("--no-run", action="store_true", help="read a pipeline that has run, do not run it")
    parser.add_argument("--variant", choices=VARIANTS, help="an ablation variant at the recipe's total time")
    parser.add_argument("--reuse", help="a finished run of the full recipe whose shared stages a --variant reads "
                                        "instead of training them again (their minutes still count)")
    parser.add_argument("--out", help="append the result line here (JSON lines)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    reuse = Path(args.reuse).resolve() if args.reuse else None
    reused: list[str] = []
    if reuse is not None and args.variant in (None, "full", "scratch"):
        parser.error("--reuse is for the variants that share stages with the full recipe (encoder, decoder, bt); "
                     "the full recipe itself: --run-dir RUN --no-run")
    if reuse is not None and not (reuse / "pipeline.json").is_file():
        parser.error(f"--reuse {reuse}: no pipeline.json there; run the full recipe into it first")
    if args.variant:
        pipeline, reused = variant_pipeline(args.variant, run_dir, reuse)
        args.pipeline = str(pipeline)
    if not args.no_run:
        command = ["pipeline", args.pipeline, "--out", str(run_dir), "--quiet"]
        if args.budget:
            command += ["--budget", args.budget]
        if main(command) != 0:
            return 1
    stages = json.loads((run_dir / "pipeline.json").read_text(encoding="utf-8"))["stages"]
    if reused:
        done = json.loads((reuse / "pipeline.json").read_text(encoding="utf-8"))["stages"]
        missing = [name for name in reused if not done.get(name, {}).get("done")]
        if missing:
            raise SystemExit(f"--reuse {reuse}: stage(s) {', '.join(missing)} not done there")
        stages = {**{name: {**done[name], "reused_from": str(reuse)} for name in reused}, **stages}
    scores = json.loads((run_dir / "scores" / "scores.json").read_text(encoding="utf-8"))
    result = {
        "pipeline": str(Path(args.pipeline).relative_to(ROOT)) if Path(args.pipeline).is_absolute() else args.pipeline,
        "budget": args.budget or "as shipped",
        "stage_minutes": {name: round(record["seconds"] / 60, 2) for name, record in stages.items()},
        "total_minutes": round(sum(record["seconds"] for record in stages.values()) / 60, 2),
        "stages": {name: {k: v for k, v in record.items() if k not in ("seconds", "done")}
                   for name, record in stages.items()},
        "scores": {split: {key: s[key] for key in ("bleu", "chrf", "signature", "chrf_signature") if key in s}
                   for split, s in scores.items()},
        "variant": args.variant or "full",
        "note_sentences": note_translations(run_dir / "final" if (run_dir / "final").is_dir()
                                            else reuse / "translator" if "translator" in reused
                                            else run_dir / "translator"),
    }
    write_result("ko_en_pipeline", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main_())

"""Commands for every family: info, train, import-hf, export-hf."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanoformer.cli.common import DEVICES, add_run_arguments, run_training, train_overrides
from nanoformer.errors import UserError


def _load_config_for_info(target: str):
    """A ModelConfig from a preset name, a config JSON file, or a checkpoint/run folder."""
    from nanoformer.config import PRESETS, ModelConfig

    if target in PRESETS:
        return ModelConfig.from_preset(target)
    path = Path(target)
    if path.is_dir():
        from nanoformer.api import resolve_checkpoint

        path = resolve_checkpoint(path) / "config.json"
    if not path.exists():
        raise UserError(f"{target}: not a preset, config file or checkpoint; presets are: {', '.join(PRESETS)}")
    if path.suffix == ".toml":
        from nanoformer.run_config import load_run_config

        return load_run_config(path).model
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: invalid JSON ({error.msg}); fix the file") from None
    return ModelConfig.from_dict(data.get("model", data))


def cmd_info(args: argparse.Namespace) -> None:
    from nanoformer.models import build_model
    from nanoformer.summary import format_summary

    config = _load_config_for_info(args.target)
    print(format_summary(config, build_model(config), depth=args.depth))


def cmd_train(args: argparse.Namespace) -> None:
    from nanoformer.run_config import load_run_config

    run_training(load_run_config(args.config, train_overrides(args)), args)


def cmd_pipeline(args: argparse.Namespace) -> None:
    """Run a pipeline file's stages in order, each resumed where it stopped; print what each took."""
    from nanoformer.recipes.pipeline import load_pipeline, run_pipeline

    pipeline = load_pipeline(args.pipeline, args.out or Path("runs") / Path(args.pipeline).parent.name)
    if args.budget:
        factor = pipeline.scale_to(args.budget)
        print(f"[pipeline] every stage's max_time scaled by {factor:.3f} to add up to {args.budget}")
    state = run_pipeline(pipeline, only=args.only, progress=not args.quiet)
    print(f"{'stage':<14} {'kind':<15} {'minutes':>8}  status")
    for stage in pipeline.stages:
        record = state.stages.get(stage.name, {})
        status = "done" if record.get("done") else ("stopped" if record else "not run")
        detail = ", ".join(f"{split} BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f}"
                           for split, s in record.get("scores", {}).items())
        if record.get("best_val_loss") is not None:
            detail = f"step {record['step']}, best val loss {record['best_val_loss']:.4f}"
        if "sentences" in record:
            detail = f"{record['sentences']:,} of {record['of']:,} sentences"
        print(f"{stage.name:<14} {stage.kind:<15} {record.get('seconds', 0) / 60:>8.1f}  {status}  {detail}".rstrip())
    total = sum(r.get("seconds", 0) for r in state.stages.values()) / 60
    print(f"{'total':<14} {'':<15} {total:>8.1f}  (all sessions; {pipeline.out / 'pipeline.json'})")


def cmd_plan(args: argparse.Namespace) -> None:
    """What `train` would choose for this budget on this machine, without training."""
    from nanoformer.recipes.budget import FITTED, LAWS, check_sizable, plan_budget
    from nanoformer.recipes.lm import data_files, train_tokenizer
    from nanoformer.run_config import load_run_config

    run = load_run_config(args.config, train_overrides(args))
    if run.size != "auto":
        raise UserError(f"{args.config}: `plan` sizes a model for its budget; set [model] size = 'auto' "
                        "(e.g. --set model.size=auto) and [train] max_time")
    check_sizable(run)
    base_dir = run.source.parent if run.source else None
    vocab_size = run.data.vocab_size
    if run.data_kind == "lm" and run.data.tokenizer == "char":  # the characters of the text: cheap to count, and they set the output layer
        vocab_size = train_tokenizer(run.data, data_files(run.data, base_dir)).vocab_size
    candidates, best = plan_budget(run, vocab_size)
    law = LAWS[run.model.arch]
    print(f"budget {run.train.max_time} ({run.train.max_time_s:g}s of training); "
          f"L(N, D) = {law.E:.3f} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f}")
    print(f"{'':3}{'rung':<12} {'params':>10} {'ms/step':>8} {'steps':>7} {'tokens':>8} {'expected loss':>14}")
    for c in candidates:
        loss = f"{c.predicted_loss:.3f}" if c.predicted_loss is not None else "too few steps"
        mark = "->" if c is best else ""
        print(f"{mark:<3}{c.rung.name:<12} {c.rung.n_params:>10,} {c.step_s * 1000:>8.0f} {c.steps:>7} "
              f"{c.tokens / 1e6:>7.2f}M {loss:>14}")
    print(f"chosen: {best.rung.name} ({best.rung.describe()}), expected val loss {best.predicted_loss:.3f}")
    if run.data_kind == "translation":
        print(f"(evaluation counted as eval_batches = {run.train.eval_batches} batches every {run.train.eval_interval} "
              "steps; `train` counts the validation split's real batches, so it may expect a few more steps)")
    corpus = FITTED.get(run.model.arch, {}).get("corpus")
    if corpus:
        print(f"(the law was fitted on {corpus}; on other text its losses rank the shapes but are not a forecast)")


def cmd_import_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import import_hf

    print(f"wrote {import_hf(args.source, args.out)}")


def cmd_export_hf(args: argparse.Namespace) -> None:
    from nanoformer.interop.folders import export_hf

    print(f"wrote {export_hf(args.checkpoint, args.out)}")


def cmd_export_ct2(args: argparse.Namespace) -> None:
    from nanoformer.interop.ctranslate2 import export_ct2

    quantization = None if args.quantization == "float32" else args.quantization
    print(f"wrote {export_ct2(args.checkpoint, args.out, quantization, force=args.force)}")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from nanoformer.interop.onnx import export_onnx

    print(f"wrote {export_onnx(args.checkpoint, args.out, force=args.force)}")


def cmd_quantize(args: argparse.Namespace) -> None:
    import shutil

    import nanoformer
    from nanoformer.quantize import quantize
    from nanoformer.training.checkpoint import read_config, resolve_checkpoint, save_checkpoint

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out}: already exists; choose another folder or pass --force to replace it")
    folder = resolve_checkpoint(args.checkpoint)
    model, tokenizer = nanoformer.load(folder)
    quantize(model, embeddings=not args.float_embeddings, strict=True)
    config = {**read_config(folder), "model": model.config.to_dict()}
    save_checkpoint(out, model, config, tokenizer)
    for extra in ("source_tokenizer.json",):
        if (folder / extra).is_file():
            shutil.copyfile(folder / extra, out / extra)
    print(f"wrote {out}: int8 weights, for inference")


def args_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a preset name, a config .json/.toml, or a checkpoint / run folder")
    parser.add_argument("--depth", type=int, default=3, help="module depth of the parameter table")


def args_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a TOML file with [model], [data] and [train] sections (see configs/)")
    add_run_arguments(parser)


def args_pipeline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="a pipeline TOML of [[stage]] tables (e.g. configs/ko_en/pipeline.toml)")
    parser.add_argument("--out", help="the pipeline's folder (default: runs/<the file's folder name>)")
    parser.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable)")
    parser.add_argument("--budget", help="scale every stage's max_time so that they add up to this (e.g. 30m)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def args_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a TOML config with [model] size = 'auto' and [train] max_time")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--device", choices=DEVICES, help="shorthand for --set train.device=...")


def args_import_hf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a folder written by save_pretrained (or a hub id, when online)")
    parser.add_argument("out", help="the checkpoint folder to write")


def args_export_hf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("out", help="the folder to write (save_pretrained layout)")


def args_export_ct2(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("out", help="the CTranslate2 model folder to write")
    parser.add_argument("--quantization", default="float32", choices=["float32", "int8", "int8_float32", "int16"],
                        help="weight type of the exported model (CTranslate2's own quantization)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def args_quantize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder (its best checkpoint) or a checkpoint folder")
    parser.add_argument("out", help="the int8 checkpoint folder to write (loads directly: nanoformer translate OUT ...)")
    parser.add_argument("--float-embeddings", action="store_true", help="keep the token tables in float32")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def args_export_onnx(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="an encoder (BERT-style) run or checkpoint folder")
    parser.add_argument("out", help="the folder to write: model.onnx, tokenizer.json, config.json")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")

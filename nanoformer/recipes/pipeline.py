"""A pipeline of runs: pre-train, back-translate, warm-start, average, score, as one resumable command.

The recipe of a translator for a language pair with little parallel text (configs/ko_en/pipeline.toml):
a masked-LM encoder on source-language text, a GPT decoder on target-language text, a reverse
model, synthetic pairs from the reverse model, the forward model warm-started from the two
pre-trained parts and trained on real + synthetic pairs, its checkpoints averaged, then scored.

```toml
[[stage]]
name = "encoder"                         # the stage's folder: OUT/encoder
train = "encoder_ko.toml"                # a run config, resolved against this file's folder
max_time = "30m"                         # sets [train] max_time
set = ["train.seed=1"]                   # more --set overrides; "{encoder}" = OUT/encoder

[[stage]]
name = "synthetic"
back_translate = "reverse"               # a stage (or a run folder): the target -> source model
input = ["multi30k/train.en"]            # target-language text, one sentence a line
languages = ["en", "ko"]                 # the input's language, the synthetic side's: OUT/synthetic/pairs.en / .ko
sample = true                            # or beam_size = 4
max_time = "10m"                         # translate for at most this long (the sentences done are kept)

[[stage]]
name = "final"
average = "translator"                   # the mean of a stage's last `last` checkpoints
last = 5

[[stage]]
name = "scores"
evaluate = "final"                       # sacreBLEU and chrF of a stage's model on its run's splits
splits = ["val", "test"]
```

Every stage's work is kept: a training stage resumes from its last checkpoint, back-translation
from its last finished shard, and `OUT/pipeline.json` records what is done and how long each
stage took, so a pipeline interrupted anywhere continues where it stopped when run again.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanoformer.errors import UserError

STATE_FILE = "pipeline.json"
KINDS = ("train", "back_translate", "average", "evaluate")
SHARD_LINES = 2000  # back-translation keeps its work in shards of this many sentences
STAGE_KEYS = {
    "train": {"max_time", "set"},
    "back_translate": {"input", "languages", "sample", "top_k", "top_p", "temperature", "beam_size", "batch_size",
                       "max_time", "max_sentences", "max_words", "seed", "prose"},
    "average": {"last"},
    "evaluate": {"splits", "beam_size", "batch_size"},
}


@dataclass
class Stage:
    name: str
    kind: str
    target: str  # the config file (train), or the stage / folder whose model the stage uses
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    stages: list[Stage]
    source: Path
    out: Path

    def total_time_s(self) -> float:
        """The sum of the stages' max_time budgets."""
        from nanoformer.training.config import parse_duration

        return sum(parse_duration(s.options["max_time"]) for s in self.stages if "max_time" in s.options)

    def scale_to(self, budget: str) -> float:
        """Scale every stage's max_time so that they add up to `budget` (e.g. "20m"); returns the factor."""
        from nanoformer.training.config import parse_duration

        total = self.total_time_s()
        if not total:
            raise UserError("--budget scales the stages' max_time, but no stage has one")
        factor = parse_duration(budget, "--budget") / total
        for stage in self.stages:
            if "max_time" in stage.options:
                stage.options["max_time"] = f"{parse_duration(stage.options['max_time']) * factor:.1f}s"
        return factor

    def folder(self, name: str) -> Path:
        return self.out / name

    def expand(self, text: str) -> str:
        """'{encoder}' -> OUT/encoder, for every stage name (a back-translation stage: its pairs' stem)."""
        def replace(match: re.Match) -> str:
            stage = next((s for s in self.stages if s.name == match.group(1)), None)
            if stage is None:
                return match.group(0)
            if stage.kind == "back_translate":
                return str((self.folder(stage.name) / "pairs").resolve())
            return str(self.folder(stage.name).resolve())

        return re.sub(r"\{([A-Za-z0-9_-]+)\}", replace, text)

    def model_of(self, stage: Stage) -> Path:
        """The run or checkpoint folder a back_translate / average / evaluate stage reads."""
        if any(s.name == stage.target for s in self.stages):
            return self.folder(stage.target)
        path = Path(self.expand(stage.target))
        return path if path.is_absolute() else self.source.parent / path


def load_pipeline(path: str | Path, out: str | Path) -> Pipeline:
    """Read and check a pipeline TOML: every stage known, named once, and pointing at earlier stages."""
    from nanoformer.run_config import tomllib

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pipeline file not found; pass a TOML file such as configs/ko_en/pipeline.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: invalid TOML: {error}") from None
    unknown = sorted(set(raw) - {"stage"})
    if unknown or not isinstance(raw.get("stage"), list) or not raw["stage"]:
        raise UserError(f"{path}: a pipeline is a list of [[stage]] tables"
                        f"{f'; unknown top-level key(s) {unknown}' if unknown else ''}")
    stages: list[Stage] = []
    for number, table in enumerate(raw["stage"], start=1):
        where = f"{path}: stage {number}"
        name = table.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise UserError(f"{where}: name = {name!r}; give each stage a folder name (letters, digits, - and _)")
        if any(s.name == name for s in stages):
            raise UserError(f"{where}: name = {name!r} is used twice; stage names are folder names")
        kinds = [kind for kind in KINDS if kind in table]
        if len(kinds) != 1:
            raise UserError(f"{where} ({name}): give exactly one of {', '.join(KINDS)}")
        kind = kinds[0]
        options = {key: value for key, value in table.items() if key not in ("name", kind)}
        bad = sorted(set(options) - STAGE_KEYS[kind])
        if bad:
            raise UserError(f"{where} ({name}): unknown key(s) {bad} for a {kind} stage; valid: "
                            f"{', '.join(sorted(STAGE_KEYS[kind]))}")
        target = table[kind]
        if not isinstance(target, str) or not target:
            raise UserError(f"{where} ({name}): {kind} = {target!r}; expected a file or a stage name")
        if kind != "train" and "{" not in target and not any(s.name == target for s in stages) \
                and not (path.parent / target).exists() and not Path(target).exists():
            raise UserError(f"{where} ({name}): {kind} = {target!r} is neither an earlier stage "
                            f"({', '.join(s.name for s in stages) or 'none yet'}) nor a folder")
        if kind == "back_translate":
            check_back_translate_options(options, f"{where} ({name})")
        stages.append(Stage(name, kind, target, options))
    return Pipeline(stages, path, Path(out))


def check_back_translate_options(options: dict[str, Any], where: str) -> None:
    languages = options.get("languages")
    if not (isinstance(languages, list) and len(languages) == 2 and all(isinstance(x, str) and x for x in languages)
            and languages[0] != languages[1]):
        raise UserError(f"{where}: languages = {languages!r}; give [input language, synthetic language], e.g. "
                        "['en', 'ko']")
    inputs = options.get("input")
    if isinstance(inputs, str):
        options["input"] = [inputs]
    elif not (isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs)):
        raise UserError(f"{where}: input = {inputs!r}; give the monolingual text files to back-translate")
    if options.get("sample") and options.get("beam_size", 1) != 1:
        raise UserError(f"{where}: sample = true draws one translation per sentence; remove beam_size")


# --------------------------------------------------------------------------- state


class PipelineState:
    """OUT/pipeline.json: per stage, whether it is done and the seconds spent on it (all sessions)."""

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.stages = json.loads(self.path.read_text(encoding="utf-8"))["stages"]
            except (ValueError, KeyError):
                raise UserError(f"{self.path}: not a pipeline record; delete it to start the pipeline over") from None

    def record(self, name: str) -> dict[str, Any]:
        return self.stages.setdefault(name, {"done": False, "seconds": 0.0})

    def save(self) -> None:
        from nanoformer.data.text import write_bytes_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, (json.dumps({"stages": self.stages}, indent=2) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------- running


def run_pipeline(pipeline: Pipeline, only: list[str] | None = None, progress: bool = True) -> PipelineState:
    """Run every stage not yet done (or only those named), in order; returns the record."""
    state = PipelineState(pipeline.out)
    names = [s.name for s in pipeline.stages]
    for name in only or []:
        if name not in names:
            raise UserError(f"--only {name}: no such stage; the stages are {', '.join(names)}")
        if state.stages.get(name, {}).get("done"):
            raise UserError(f"--only {name}: the stage is done ({state.path}); to run it again, delete "
                            f"{pipeline.folder(name)} and its entry in {STATE_FILE}")
    for number, stage in enumerate(pipeline.stages, start=1):
        record = state.record(stage.name)
        if record["done"] or (only and stage.name not in only):
            continue
        print(f"[pipeline] stage {number}/{len(pipeline.stages)} {stage.name}: {stage.kind} {stage.target}"
              + (f" ({stage.options['max_time']})" if "max_time" in stage.options else ""), file=sys.stderr)
        start = time.perf_counter()
        runner = {"train": run_train, "back_translate": run_back_translate, "average": run_average,
                  "evaluate": run_evaluate}[stage.kind]
        try:
            done, details = runner(pipeline, stage, record, state, progress)
        finally:
            record["seconds"] = round(record["seconds"] + time.perf_counter() - start, 1)
            state.save()
        record.update(details)
        record["done"] = done
        state.save()
        if not done:
            print(f"[pipeline] {stage.name} stopped before its end; run the pipeline again to continue", file=sys.stderr)
            break
        print(f"[pipeline] {stage.name} done in {record['seconds'] / 60:.1f} min", file=sys.stderr)
    return state


def run_train(pipeline: Pipeline, stage: Stage, record: dict, state: PipelineState, progress: bool):
    from nanoformer.recipes import train
    from nanoformer.run_config import load_run_config

    config = pipeline.source.parent / stage.target
    overrides = [pipeline.expand(text) for text in stage.options.get("set", [])]
    if "max_time" in stage.options:
        overrides.append(f"train.max_time='{stage.options['max_time']}'")
    run = load_run_config(config, overrides)
    folder = pipeline.folder(stage.name)
    resume = (folder / "checkpoints" / "last").is_dir()
    result = train(run, folder, resume=resume, progress=progress)
    return not result.interrupted and result.stopped_by != "pause", {
        "step": result.step, "stopped_by": result.stopped_by, "best_val_loss": result.best_val_loss}


def run_average(pipeline: Pipeline, stage: Stage, record: dict, state: PipelineState, progress: bool):
    from nanoformer.data.text import write_bytes_atomic
    from nanoformer.recipes.translation import SOURCE_TOKENIZER_FILE
    from nanoformer.training.checkpoint import average_checkpoints, numbered_checkpoints, resolve_checkpoint

    source = pipeline.model_of(stage)
    found = numbered_checkpoints(source)
    if not found:
        raise UserError(f"{stage.name}: {source} has no numbered checkpoints to average; train it with "
                        "[train] keep_last = N")
    paths = found[-int(stage.options.get("last", 5)):]
    out = average_checkpoints(paths, pipeline.folder(stage.name))
    source_tokenizer = resolve_checkpoint(paths[-1]) / SOURCE_TOKENIZER_FILE
    if source_tokenizer.is_file():
        write_bytes_atomic(out / SOURCE_TOKENIZER_FILE, source_tokenizer.read_bytes())
    return True, {"averaged": [p.name for p in paths]}


def run_evaluate(pipeline: Pipeline, stage: Stage, record: dict, state: PipelineState, progress: bool):
    """sacreBLEU and chrF (with signatures) on the splits recorded in the model's config."""
    from nanoformer.data.text import write_bytes_atomic
    from nanoformer.recipes.translation import translation_scores

    scores = translation_scores(pipeline.model_of(stage), stage.options.get("splits"),
                                beam_size=int(stage.options.get("beam_size", 4)),
                                batch_size=int(stage.options.get("batch_size", 32)), progress=progress,
                                where=stage.name)
    for split, result in scores.items():
        print(f"[pipeline] {stage.name} {split}: BLEU {result['bleu']:.2f} chrF {result['chrf']:.2f}  "
              f"{result['signature']}", file=sys.stderr)
    out = pipeline.folder(stage.name) / "scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, (json.dumps(scores, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return True, {"scores": {split: {"bleu": s["bleu"], "chrf": s["chrf"]} for split, s in scores.items()}}


# --------------------------------------------------------------------------- back-translation


def monolingual_sentences(files: list[str], base: Path, prose: bool = False, max_words: int = 50) -> list[str]:
    """The distinct sentences of the input files (prose: paragraphs split at sentence ends)."""
    from nanoformer.data.parallel import find_path
    from nanoformer.data.text import decode_text

    seen: dict[str, None] = {}
    for name in files:
        path = find_path(Path(name), base)
        text = decode_text(path.read_bytes(), path)
        if prose:
            paragraphs = (" ".join(block.split()) for block in re.split(r"\n\s*\n", text))
            lines = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+(?=[\"'A-Z])", p)]
        else:
            lines = text.split("\n")
        for line in lines:
            line = " ".join(line.split())
            if line and len(line.split()) <= max_words:
                seen.setdefault(line, None)
    if not seen:
        raise UserError(f"{', '.join(files)}: no sentence of at most {max_words} words to back-translate; "
                        "give monolingual text, one sentence a line")
    return list(seen)


def run_back_translate(pipeline: Pipeline, stage: Stage, record: dict, state: PipelineState, progress: bool):
    """Translate target-language text with the reverse model, shard by shard, within max_time."""
    import torch

    from nanoformer.api import load
    from nanoformer.data.text import write_bytes_atomic
    from nanoformer.generation.translation import translate_texts
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import resolve_checkpoint
    from nanoformer.training.config import parse_duration

    options = stage.options
    mono_lang, synth_lang = options["languages"]
    folder = pipeline.folder(stage.name)
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    sentences = monolingual_sentences(options["input"], pipeline.source.parent, bool(options.get("prose")),
                                      int(options.get("max_words", 50)))
    random.Random(int(options.get("seed", 0))).shuffle(sentences)
    if options.get("max_sentences"):
        sentences = sentences[: int(options["max_sentences"])]
    budget = parse_duration(options["max_time"]) if "max_time" in options else None
    checkpoint = resolve_checkpoint(pipeline.model_of(stage))
    model, tokenizer = load(checkpoint)
    source_tokenizer = load_source_tokenizer(checkpoint, tokenizer)
    spent = record.get("translate_seconds", 0.0)
    n_shards = -(-len(sentences) // SHARD_LINES)
    for index in range(n_shards):
        done = shards / f"{index:05d}.{synth_lang}"
        if done.is_file():
            continue
        if budget is not None and spent >= budget:
            break
        batch = sentences[index * SHARD_LINES:(index + 1) * SHARD_LINES]
        sampling = None
        if options.get("sample"):
            generator = torch.Generator().manual_seed(int(options.get("seed", 0)) * 100_003 + index)
            sampling = {"do_sample": True, "temperature": float(options.get("temperature", 1.0)),
                        "top_k": options.get("top_k"), "top_p": options.get("top_p"), "generator": generator}
        start = time.perf_counter()
        outputs = translate_texts(model, tokenizer, batch, source_tokenizer=source_tokenizer,
                                  beam_size=int(options.get("beam_size", 1)), batch_size=int(options.get("batch_size", 64)),
                                  progress=progress, sampling=sampling)
        spent += time.perf_counter() - start
        write_bytes_atomic(shards / f"{index:05d}.{mono_lang}", ("\n".join(batch) + "\n").encode("utf-8"))
        write_bytes_atomic(done, ("\n".join(outputs) + "\n").encode("utf-8"))  # last: marks the shard finished
        record["translate_seconds"] = round(spent, 1)
        record["shards_done"] = sum(1 for _ in shards.glob(f"*.{synth_lang}"))
        state.save()
        print(f"[pipeline] {stage.name}: shard {index + 1}/{n_shards}, {len(batch) / max(1e-9, time.perf_counter() - start):.0f} "
              f"sentences/s, {spent / 60:.1f} min of {budget / 60 if budget else float('inf'):.1f}", file=sys.stderr)
    finished = sorted(shards.glob(f"*.{synth_lang}"))
    pairs = {mono_lang: [], synth_lang: []}
    for shard in finished:
        for lang in (mono_lang, synth_lang):
            pairs[lang].append((shards / f"{shard.stem}.{lang}").read_text(encoding="utf-8"))
    if not finished:
        raise UserError(f"{stage.name}: max_time = {options.get('max_time')} left no time to translate one shard of "
                        f"{SHARD_LINES} sentences; raise it")
    for lang in (mono_lang, synth_lang):
        write_bytes_atomic(folder / f"pairs.{lang}", "".join(pairs[lang]).encode("utf-8"))
    lines = sum(text.count("\n") for text in pairs[mono_lang])
    return True, {"sentences": lines, "of": len(sentences)}

"""A training run's TOML config: `[model]`, `[data]` and `[train]` sections, plus `--set` overrides.

```toml
[model]
preset = "tiny-decoder"        # optional: start from a preset, then override fields
n_layers = 4
[data]
name = "tinyshakespeare"       # a standard set, or: path = "my_texts/"
tokenizer = "char"
[train]
max_time = "10m"
```
Relative data paths resolve against the config file's folder, then `$NANOFORMER_DATA`.
Mistakes (unknown keys, wrong types, unreadable TOML) are reported with the file and the key.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from nanoformer.config import PRESETS, ModelConfig
from nanoformer.errors import UserError
from nanoformer.training.checkpoint import read_config, resolve_init_from
from nanoformer.training.warm_start import WARM_START_KEYS, warm_start_values
from nanoformer.training.config import TrainConfig

TOKENIZER_KINDS = ("char", "bpe", "wordpiece", "unigram")
# What the [data] section describes. Each kind has its own dataclass, chosen by `kind = "..."`
# in [data], or by the model's arch when it is not given.
DATA_KINDS = ("lm", "translation", "mlm", "classification")
DEFAULT_DATA_KIND = {"decoder": "lm", "encoder-decoder": "translation", "encoder": "mlm"}


@dataclass
class DataConfig:
    """Language-model text (kind "lm"): where it comes from and how it becomes tokens."""

    name: str | None = None  # a standard set, e.g. "tinyshakespeare"
    path: str | list[str] | None = None  # a file, a folder of text files, or a list of them
    tokenizer: str = "char"
    vocab_size: int = 8000  # for trained subword tokenizers (bpe, wordpiece, unigram)
    block_size: int = 256  # context length of a training window
    val_fraction: float = 0.1  # the last part of the text, as nanoGPT splits it
    cache_dir: str | None = None  # token caches; default: RUN_DIR/data

    def __post_init__(self) -> None:
        if self.name is None and self.path is None:
            raise UserError("[data] needs `name` (a standard set such as 'tinyshakespeare') or `path` (a file or folder)")
        if self.tokenizer not in TOKENIZER_KINDS:
            raise UserError(f"[data] tokenizer = {self.tokenizer!r}; expected one of {list(TOKENIZER_KINDS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"[data] val_fraction = {self.val_fraction}; expected a fraction in (0, 1), e.g. 0.1")


def data_config_class(kind: str) -> type:
    """The dataclass that validates a [data] section of this kind."""
    if kind == "lm":
        return DataConfig
    if kind == "translation":
        from nanoformer.data.parallel import TranslationDataConfig

        return TranslationDataConfig
    if kind == "mlm":
        from nanoformer.data.mlm import MLMDataConfig

        return MLMDataConfig
    if kind == "classification":
        from nanoformer.data.classification import ClassificationDataConfig

        return ClassificationDataConfig
    raise UserError(f"[data] kind = {kind!r}; expected one of {list(DATA_KINDS)}")


@dataclass
class RunConfig:
    model: ModelConfig
    data: Any  # the dataclass of `data_kind`, e.g. DataConfig for "lm"
    train: TrainConfig
    source: Path | None = None  # the TOML file, for resolving relative paths
    extra: dict[str, Any] = field(default_factory=dict)
    data_kind: str = "lm"
    # [model] size: "auto" (sized for max_time, recipes/budget.py), a rung's name, or "fixed" (None: the shape given)
    size: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.data_kind, **dataclasses.asdict(self.data)}
        return {"model": self.model.to_dict(), "data": data, "train": self.train.to_dict()}


# [model] keys that may accompany init_from: they do not change the shapes of the weights.
INIT_FROM_OVERRIDES = ("dropout", "attention_dropout", "activation_dropout", "classifier_pooling", "attention_impl")


def apply_init_from(model_values: dict[str, Any], source: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """[model] values with `init_from` replaced by the checkpoint's architecture.

    Returns (the values to build the ModelConfig from, the checkpoint folder or None). This is
    the hook a run config calls when [model] has `init_from`.
    """
    values = dict(model_values)
    if "init_from" not in values:
        return values, None
    if values["init_from"] in ("", "none"):  # explicitly from scratch
        del values["init_from"]
        return values, None
    folder = resolve_init_from(values.pop("init_from"), source)
    where = str(source) if source else "config"
    unsupported = sorted(set(values) - set(INIT_FROM_OVERRIDES))
    if unsupported:
        raise UserError(f"{where}: [model] {', '.join(unsupported)} cannot change with init_from (the architecture "
                        f"is the checkpoint's); remove them, or keep only {', '.join(INIT_FROM_OVERRIDES)}")
    saved = read_config(folder)
    base = dict(saved.get("model", saved))
    if base.get("quantization"):
        raise UserError(f"{where}: [model] init_from = {str(folder)!r} holds {base['quantization']} weights for "
                        "inference only; start from the float checkpoint it was quantized from")
    return {**base, **values}, folder


# What [model] size = "auto" (or a rung's name) sets, per [data] kind: a config that gives these
# too has two answers to one question.
SIZED_KEYS = {
    "lm": {
        "model": ("d_model", "n_layers", "n_heads", "d_ff", "max_positions"),
        "data": ("block_size",),
        "train": ("batch_size", "lr", "min_lr", "warmup_steps", "max_steps"),
    },
    "translation": {
        "model": ("d_model", "n_layers", "n_heads", "d_ff"),
        "data": ("max_tokens",),
        "train": ("lr", "warmup_steps", "max_steps"),
    },
    "mlm": {
        "model": ("d_model", "n_layers", "n_heads", "d_ff", "max_positions"),
        "data": ("max_length",),
        "train": ("batch_size", "lr", "min_lr", "warmup_steps", "max_steps"),
    },
}


def sized_keys(sections: dict[str, dict[str, Any]], default_data_kind: str | None = None) -> dict[str, tuple[str, ...]]:
    """The keys a size sets for this config's [data] kind (its arch's default kind when it names none)."""
    arch = sections.get("model", {}).get("arch", ModelConfig.arch)
    kind = sections.get("data", {}).get("kind", default_data_kind or DEFAULT_DATA_KIND.get(arch, "lm"))
    return SIZED_KEYS.get(kind, {})


def drop_sized_keys(sections: dict[str, dict[str, Any]]) -> None:
    """Remove what a size would set, so that the config can be sized instead (benchmarks, studies)."""
    for section, keys in sized_keys(sections).items():
        for key in keys:
            sections.get(section, {}).pop(key, None)


def check_size_keys(size: Any, sections: dict[str, dict[str, Any]], where: str,
                    default_data_kind: str | None = None) -> None:
    """`size` is "auto" or a rung's name, and the keys it sets are not given beside it."""
    if not isinstance(size, str) or not size:
        raise UserError(f"{where}: [model] size = {size!r}; expected 'auto', 'fixed' or the name of a rung such as "
                        "'4x256-c128'")
    for section, keys in sized_keys(sections, default_data_kind).items():
        given = [key for key in keys if key in sections.get(section, {})]
        if section == "train" and "max_time" not in sections.get("train", {}):  # a rung may run for a number of steps
            given = [key for key in given if key != "max_steps"]
        if given:
            raise UserError(f"{where}: [model] size = {size!r} sets [{section}] {', '.join(given)}; remove "
                            f"{'it' if len(given) == 1 else 'them'}, or remove `size` to fix the shape yourself")
    if size == "auto" and "max_time" not in sections.get("train", {}):
        raise UserError(f"{where}: [model] size = 'auto' sizes the model for [train] max_time; give one, e.g. "
                        "--set train.max_time=10m")


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.lr=3e-4' -> ('train', 'lr', 3e-4). Values are read as TOML, falling back to a string."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise UserError(f"--set {text!r}: write it as section.key=value, e.g. --set train.max_steps=500")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def _known_keys(section: str, values: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} in [{section}]; valid keys: {', '.join(sorted(allowed))}")


def _check_types(section: str, values: dict[str, Any], cls: type, where: str) -> None:
    """Catch `n_layers = "4"` before it becomes an obscure error deep in torch."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        field = fields.get(key)
        if field is None or value is None:
            continue
        expected = _declared_type(field)
        if expected is None:
            continue
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int) and not isinstance(value, bool))
        if expected is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise UserError(
                f"{where}: [{section}] {key} = {value!r} is a {type(value).__name__}; expected a {expected.__name__}"
            )


def choose_corpus(data: dict[str, Any], overridden: set[tuple[str, str]], where: str) -> None:
    """`name` (a standard corpus) and `path` (the user's files) are two answers to one question.

    One given with --set replaces the other from the file (`--set data.path=mine.txt` trains on
    mine.txt, not on the file's standard corpus); both in the file, or both with --set, is an error.
    """
    if data.get("name") in (None, "") or data.get("path") in (None, ""):
        return
    by_option = {key for key in ("name", "path") if ("data", key) in overridden}
    if len(by_option) == 1:
        data.pop("path" if "name" in by_option else "name")
        return
    raise UserError(f"{where}: [data] gives both name = {data['name']!r} and path = {data['path']!r}; keep one "
                    "(name: a standard corpus, path: your own files)")


_SIMPLE_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def _declared_type(field: dataclasses.Field) -> type | None:
    """The type a config field holds: its default's, or the first of its annotation ("int | None" -> int)."""
    if field.default is not dataclasses.MISSING and field.default is not None:
        return type(field.default)
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    kinds = [part.strip().split("[")[0] for part in annotation.split("|") if part.strip() != "None"]
    return _SIMPLE_TYPES.get(kinds[0]) if len(kinds) == 1 else None  # "str | list[str]": either, unchecked


def build_run_config(
    sections: dict[str, Any], source: Path | None = None, overrides: list[str] = (), default_data_kind: str | None = None
) -> RunConfig:
    where = str(source) if source else "config"
    sections = {name: dict(values) for name, values in sections.items()}
    overridden: set[tuple[str, str]] = set()
    for text in overrides:
        section, key, value = parse_override(text)
        sections.setdefault(section, {})[key] = value
        overridden.add((section, key))
    choose_corpus(sections.get("data", {}), overridden, where)
    _known_keys("(top level)", sections, {"model", "data", "train"}, where)

    size = sections.get("model", {}).pop("size", None)
    if size == "fixed":  # the shape the config gives (`--set model.size=fixed` over a size = "auto" file)
        size = None
    if size is not None:
        if "init_from" in sections.get("model", {}):
            raise UserError(f"{where}: [model] size and init_from both say what the model is; keep one")
        check_size_keys(size, sections, where, default_data_kind)
    model_values, init_from = apply_init_from(dict(sections.get("model", {})), source)
    warm_start: dict[str, Any] = {}
    if any(key in model_values for key in WARM_START_KEYS):
        model_values, warm_start = warm_start_values(model_values, source, where)
    preset = model_values.pop("preset", None)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    _known_keys("model", model_values, model_fields | {"preset"}, where)
    _check_types("model", model_values, ModelConfig, where)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"{where}: [model] preset = {preset!r} is unknown; available: {', '.join(PRESETS)}")
    try:
        base = dict(PRESETS[preset]) if preset else {}
        model = ModelConfig.from_dict({**base, **model_values})
    except ValueError as error:
        raise UserError(f"{where}: [model] {error}") from None

    data_values = dict(sections.get("data", {}))
    kind = data_values.pop("kind", default_data_kind or DEFAULT_DATA_KIND[model.arch])
    data_class = data_config_class(kind)
    _known_keys("data", data_values, {f.name for f in dataclasses.fields(data_class)} | {"kind"}, where)
    _check_types("data", data_values, data_class, where)
    try:
        data = data_class(**data_values)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None

    train_values = sections.get("train", {})
    try:
        train = TrainConfig.from_dict(train_values)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    if train.best_metric != "val_loss" and kind != "classification":
        raise UserError(f"{where}: train.best_metric = {train.best_metric!r}: only classifiers compute validation "
                        f"metrics besides the loss; a {kind!r} run keeps its best checkpoint by val_loss")
    extra = {"init_from": str(init_from)} if init_from is not None else {}
    if warm_start:
        if kind != "translation":
            raise UserError(f"{where}: [model] init_encoder / init_decoder warm-start a translator ([data] kind = "
                            f"'translation'), not a {kind!r} run; remove them")
        if data.joint_vocab and "joint_vocab" in sections.get("data", {}):
            raise UserError(f"{where}: [data] joint_vocab = true, but the pre-trained parts bring their own "
                            "tokenizers (one per language); remove joint_vocab")
        data.joint_vocab = False
        extra["warm_start"] = warm_start
    return RunConfig(model=model, data=data, train=train, source=source, data_kind=kind, extra=extra, size=size)


def load_run_config(path: str | Path, overrides: list[str] = (), default_data_kind: str | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass a TOML file such as configs/shakespeare_char.toml")
    try:
        sections = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: invalid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    return build_run_config(sections, source=path, overrides=list(overrides), default_data_kind=default_data_kind)

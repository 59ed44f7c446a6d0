"""A readable account of a model: its config and where its parameters are."""

from __future__ import annotations

from torch import nn

from nanoformer.config import ModelConfig, closed_form_parameter_count, describe_size


def parameter_table(model: nn.Module, depth: int = 3) -> list[tuple[str, int]]:
    """(module path, parameter count) for modules up to `depth` levels down; tied weights counted once."""
    seen: set[int] = set()
    rows: dict[str, int] = {}
    for name, param in model.named_parameters():  # named_parameters already skips duplicates
        if id(param) in seen:
            continue
        seen.add(id(param))
        parts = name.split(".")[:-1]
        key = ".".join(parts[:depth]) if parts else "(root)"
        rows[key] = rows.get(key, 0) + param.numel()
    return list(rows.items())


def format_summary(config: ModelConfig, model: nn.Module, depth: int = 3) -> str:
    lines = [f"nanoformer {config.arch} model"]
    width = max(len(k) for k in config.to_dict())
    for key, value in config.to_dict().items():
        lines.append(f"  {key:<{width}}  {value}")
    rows = parameter_table(model, depth)
    total = sum(n for _, n in rows)
    name_width = max([len(n) for n, _ in rows] + [len("module")])
    lines.append("")
    lines.append(f"  {'module':<{name_width}}  {'parameters':>12}  {'share':>6}")
    for name, count in rows:
        lines.append(f"  {name:<{name_width}}  {count:>12,}  {100 * count / total:>5.1f}%")
    lines.append(f"  {'total':<{name_width}}  {total:>12,}  ({describe_size(total)}; closed form {closed_form_parameter_count(config):,})")
    return "\n".join(lines)

"""A Hugging Face model's generation settings <-> a checkpoint's `generation` section.

An opus-mt model decodes by its `generation_config`: beam size (`num_beams`), a length limit
(`max_length`, the start token included), a banned pad token (`bad_words_ids`), eos forced at the
limit (`forced_eos_token_id`), a length penalty. Our defaults are others (beam 4, the fairseq
length rule), so an imported model would translate differently at the limit. `import-hf` keeps
its settings in the checkpoint's config.json, `translate` takes them as its defaults (an option
given on the command line still wins), and `export-hf` writes them back.
"""

from __future__ import annotations

from typing import Any

SECTION = "generation"


def generation_from_hf(hf_model: Any) -> dict[str, Any]:
    """Our translate defaults from a Hugging Face seq2seq model's generation (or model) config."""
    config = hf_model.config
    generation = getattr(hf_model, "generation_config", None)

    def get(name: str, default: Any) -> Any:
        for source in (generation, config):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                return value
        return default

    banned = [ids[0] for ids in (get("bad_words_ids", None) or []) if len(ids) == 1]
    forced_eos = get("forced_eos_token_id", None)
    return {
        "beam_size": int(get("num_beams", 1)),
        "length_penalty": float(get("length_penalty", 1.0)),
        "max_len_a": 0.0,  # Hugging Face limits every sentence alike, not by its source length
        "max_len_b": int(get("max_length", 20)) - 1,  # max_length counts the start token
        "bad_ids": banned,
        "force_eos": forced_eos is not None and forced_eos == config.eos_token_id,
    }


def generation_to_hf(defaults: dict[str, Any], hf_model: Any) -> None:
    """Write a checkpoint's generation section into a Hugging Face model's generation_config."""
    generation = hf_model.generation_config
    generation.num_beams = int(defaults.get("beam_size", 1))
    generation.length_penalty = float(defaults.get("length_penalty", 1.0))
    if defaults.get("max_len_b") is not None and not defaults.get("max_len_a"):
        generation.max_length = int(defaults["max_len_b"]) + 1
    banned = defaults.get("bad_ids") or []
    generation.bad_words_ids = [[int(i)] for i in banned] or None
    generation.forced_eos_token_id = hf_model.config.eos_token_id if defaults.get("force_eos") else None

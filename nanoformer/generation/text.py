"""Text in, text out: prompts through the tokenizer, streaming and stop strings.

Byte-level BPE can split one character over several tokens, so streaming holds back text whose
last character is still incomplete (decoded as U+FFFD) until the next token completes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from nanoformer.generation.sampling import generate, left_pad


class Tokenizer(Protocol):
    """What text generation needs of a tokenizer (nanoformer.tokenizer.Tokenizer has it)."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from the BOS token (or EOS, the document separator,
    if there is none), since generation needs at least one token to condition on."""
    ids = tokenizer.encode(prompt)
    if not ids:
        start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
        ids = [start if start is not None else 0]
    return ids


def encode_prompt(tokenizer: Tokenizer, prompt: str, room: int) -> list[int]:
    """Prompt ids (`prompt_ids`), keeping the last `room` tokens (with a warning) when it is too long."""
    ids = prompt_ids(tokenizer, prompt)
    if len(ids) > room:
        warnings.warn(f"prompt has {len(ids)} tokens but only {room} fit in the context; keeping the last {room}")
        ids = ids[-room:]
    return ids


@dataclass
class Continuation:
    """One row's generated text, its tokens and why it ended: "stop" (eos or a stop string),
    "length" (its token limit) or "cancelled" (its caller gave up)."""

    text: str
    token_ids: list[int]
    finish_reason: str


def generate_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int = 200,
    stop: list[str] | None = None,
    on_text: Callable[[int, str], None] | None = None,
    generator: torch.Generator | None = None,
    **sampling,
) -> list[str]:
    """Continue each prompt; returns the generated continuations (without the prompts).

    stop: strings that end a continuation (the stop string itself is cut off).
    on_text(row, piece) receives the text of each row as it is produced (for streaming).
    """
    encoded = [encode_prompt(tokenizer, p, model.config.max_positions - 1) for p in prompts]
    rows = generate_rows(model, tokenizer, encoded, [max_new_tokens] * len(prompts), [stop or []] * len(prompts),
                         on_text=on_text, generator=generator, **sampling)
    return [row.text for row in rows]


def generate_rows(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    max_new_tokens: list[int],
    stops: list[list[str]],
    on_text: Callable[[int, str], None] | None = None,
    cancelled: Callable[[int], bool] | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    **sampling,
) -> list[Continuation]:
    """Continue prompts (token ids) in one batch, each row with its own token limit and stop strings.

    This is what lets a server batch requests with different settings: the batch runs until its
    last row ends. cancelled(row) is asked after every step; a cancelled row ends at once.
    """
    ids, mask = left_pad(prompts, tokenizer.pad_id if tokenizer.pad_id is not None else 0)
    stops = [[s for s in row if s] for row in stops]
    generated: list[list[int]] = [[] for _ in prompts]
    emitted = [0] * len(prompts)
    reasons: list[str | None] = [None] * len(prompts)
    texts = [""] * len(prompts)

    def on_tokens(next_ids: torch.Tensor) -> bool:
        for row, token in enumerate(next_ids.tolist()):
            if reasons[row] is not None:
                continue
            if cancelled is not None and cancelled(row):
                reasons[row] = "cancelled"
                continue
            if token == tokenizer.eos_id:
                reasons[row] = "stop"
                continue
            generated[row].append(token)
            text = tokenizer.decode(generated[row])
            cut = min((text.find(s) for s in stops[row] if s in text), default=-1)
            if cut >= 0:
                text, reasons[row] = text[:cut], "stop"
            elif len(generated[row]) >= max_new_tokens[row]:
                reasons[row] = "length"
            texts[row] = text
            ready = len(text) if reasons[row] or not text.endswith("\ufffd") else len(text) - 1
            if on_text is not None and ready > emitted[row]:
                on_text(row, text[emitted[row] : ready])
            emitted[row] = max(emitted[row], ready)
        return all(r is not None for r in reasons)

    generate(
        model,
        ids,
        max_new_tokens=max(max_new_tokens, default=0),
        attention_mask=mask,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        generator=generator,
        on_tokens=on_tokens,
        **sampling,
    )
    return [Continuation(text, tokens, reason or "length") for text, tokens, reason in zip(texts, generated, reasons)]

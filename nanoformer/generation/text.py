"""Text in, text out: prompts through the tokenizer, streaming and stop strings.

Byte-level BPE can split one character over several tokens, so streaming holds back text whose
last character is still incomplete (decoded as U+FFFD) until the next token completes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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


def encode_prompt(tokenizer: Tokenizer, prompt: str, room: int) -> list[int]:
    """Prompt ids, keeping the last `room` tokens (with a warning) when it is too long.

    An empty prompt starts from the BOS token (or EOS, the document separator, if there is none).
    """
    ids = tokenizer.encode(prompt)
    if not ids:
        start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
        ids = [start if start is not None else 0]
    if len(ids) > room:
        warnings.warn(f"prompt has {len(ids)} tokens but only {room} fit in the context; keeping the last {room}")
        ids = ids[-room:]
    return ids


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
    ids, mask = left_pad(encoded, tokenizer.pad_id if tokenizer.pad_id is not None else 0)
    stops = [s for s in (stop or []) if s]
    generated: list[list[int]] = [[] for _ in prompts]
    emitted = [0] * len(prompts)
    done = [False] * len(prompts)
    texts = [""] * len(prompts)

    def on_tokens(next_ids: torch.Tensor) -> bool:
        for row, token in enumerate(next_ids.tolist()):
            if done[row]:
                continue
            if token == tokenizer.eos_id:
                done[row] = True
                continue
            generated[row].append(token)
            text = tokenizer.decode(generated[row])
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text, done[row] = text[:cut], True
            texts[row] = text
            ready = len(text) if done[row] or not text.endswith("\ufffd") else len(text) - 1
            if on_text is not None and ready > emitted[row]:
                on_text(row, text[emitted[row] : ready])
            emitted[row] = max(emitted[row], ready)
        return all(done)

    generate(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        attention_mask=mask,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        generator=generator,
        on_tokens=on_tokens,
        **sampling,
    )
    return texts

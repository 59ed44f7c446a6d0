"""Fill-mask input: text with [MASK] written where words are hidden, as the model's token ids."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanoformer.tokenizer import Tokenizer

MASK_TEXT = "[MASK]"


def encode_masked_text(tokenizer: Tokenizer, text: str, mask_text: str = MASK_TEXT) -> list[int]:
    """Ids of "[CLS] text [SEP]" with every "[MASK]" in `text` turned into the mask token.

    "[MASK]" is recognised whatever the tokenizer calls its mask token, and so is that token's
    own spelling (e.g. "<mask>"). With WordPiece, text glued to the end of a mask ("[MASK]에")
    continues the masked word, so it is encoded as continuation pieces ("##에"), as the model saw
    it in training ("학교" "##에").
    """
    mask_id = tokenizer.mask_id
    spellings = {mask_text, tokenizer.id_to_token(mask_id) or mask_text}
    pattern = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    pieces = re.split(f"({pattern})", text)
    ids: list[int] = [tokenizer.cls_id]
    after_mask = False
    for piece in pieces:
        if piece in spellings:
            ids.append(mask_id)
            after_mask = True
            continue
        if piece:
            if after_mask and tokenizer.kind == "wordpiece" and not piece[0].isspace():
                head = re.match(r"\w+", piece)
                continuation = _continuation_pieces(tokenizer, head.group(0)) if head else None
                if continuation is not None:
                    ids.extend(continuation)
                    piece = piece[head.end():]
            ids.extend(tokenizer.encode(piece))
        after_mask = False
    ids.append(tokenizer.sep_id)
    return ids


def _continuation_pieces(tokenizer: Tokenizer, word: str) -> list[int] | None:
    """WordPiece's greedy longest match of `word` as the inside of a word ("##" pieces), or None."""
    normalizer = tokenizer.hf.normalizer
    if normalizer is not None:
        word = normalizer.normalize_str(word)
    vocab = tokenizer.hf.get_vocab(with_added_tokens=False)
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            index = vocab.get("##" + word[start:end])
            if index is not None:
                out.append(index)
                start = end
                break
        else:
            return None
    return out

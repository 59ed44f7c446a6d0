"""A font with Korean glyphs, so that Hangul token labels render as letters, not empty boxes.

Matplotlib's default font (DejaVu Sans) has no Hangul. We look, in this order, for
1. the file named by the environment variable NANOFORMER_FONT;
2. a font matplotlib knows whose name is a known Korean or CJK family (Noto Sans CJK KR from
   Debian's `fonts-noto-cjk`, Nanum, Malgun Gothic, Apple SD Gothic Neo, ...);
3. any other font matplotlib knows, or any font file in the system folders, that covers the
   Hangul sample.
"Covers" is checked on the font file itself: every character must have a glyph in its cmap.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

HANGUL_SAMPLE = "나는학교에간다한국어"
PREFERRED = (
    "Noto Sans CJK KR", "Noto Sans KR", "Source Han Sans KR", "NanumGothic", "NanumBarunGothic",
    "Malgun Gothic", "Apple SD Gothic Neo", "AppleGothic", "UnDotum", "Baekmuk Gulim",
    "Noto Serif CJK KR", "Noto Sans CJK JP", "Noto Sans CJK SC",
)
HINTS = ("cjk", "kr", "korean", "nanum", "gothic", "hangul", "malgun", "baekmuk")
INSTALL_HINT = ("install one (Debian/Ubuntu: `apt-get install fonts-noto-cjk`, or `make viz-deps` as root) "
                "or set NANOFORMER_FONT=/path/to/font.ttf")


@dataclass(frozen=True)
class FontChoice:
    name: str
    path: str


def is_hangul(ch: str) -> bool:
    code = ord(ch)
    return 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F


def has_hangul(texts) -> bool:
    """True if any of the strings (or the one string) holds a Hangul character."""
    if isinstance(texts, str):
        texts = [texts]
    return any(is_hangul(ch) for text in texts for ch in text)


def font_covers(path: str, text: str) -> bool:
    """Whether the font file has a glyph for every non-space character of `text`.

    A "last resort" font (matplotlib 3.10+ ships LastResortHE) maps every code point to a box
    naming its Unicode block: it covers everything and shows nothing, so it never counts.
    """
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(str(path))
    except (OSError, RuntimeError, ValueError):
        return False
    if "last resort" in f"{font.family_name} {os.path.basename(str(path))}".lower().replace("lastresort", "last resort"):
        return False
    return all(font.get_char_index(ord(ch)) != 0 for ch in set(text) if not ch.isspace())


def missing_glyphs(path: str, text: str) -> str:
    """The characters of `text` the font has no glyph for (in order, without repeats)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(path))
    return "".join(dict.fromkeys(ch for ch in text if not ch.isspace() and font.get_char_index(ord(ch)) == 0))


def _rank(name: str) -> int:
    if name in PREFERRED:
        return PREFERRED.index(name)
    lowered = f"{name.lower()} "
    return len(PREFERRED) + (0 if any(h in lowered for h in HINTS) else 1)


@functools.cache
def find_korean_font() -> FontChoice | None:
    """The best font with Hangul glyphs on this machine, registered with matplotlib; None if none."""
    from matplotlib import font_manager

    forced = os.environ.get("NANOFORMER_FONT")
    if forced:
        from nanoformer.errors import UserError

        if not os.path.isfile(forced) or not font_covers(forced, HANGUL_SAMPLE):
            raise UserError(f"NANOFORMER_FONT={forced}: not a font file with Hangul glyphs; "
                            "point it at one (e.g. NotoSansCJK-Regular.ttc) or unset it")
        return _register(forced)
    known = sorted(font_manager.fontManager.ttflist, key=lambda f: (_rank(f.name), f.weight != 400, f.fname))
    tried: set[str] = set()
    for entry in known:
        if entry.fname in tried:
            continue
        tried.add(entry.fname)
        if font_covers(entry.fname, HANGUL_SAMPLE):
            return FontChoice(entry.name, entry.fname)
    # Fonts installed after matplotlib built its cache are not in ttflist yet.
    for path in sorted(font_manager.findSystemFonts(),
                       key=lambda p: (_rank(os.path.basename(p)), "bold" in p.lower(), p)):
        if path not in tried and font_covers(path, HANGUL_SAMPLE):
            return _register(path)
    return None


def _register(path: str) -> FontChoice:
    from matplotlib import font_manager

    font_manager.fontManager.addfont(path)
    name = font_manager.FontProperties(fname=path).get_name()
    return FontChoice(name, path)


def no_font_message() -> str:
    return f"no font with Korean (Hangul) glyphs found, so Hangul labels show as boxes; {INSTALL_HINT}"

"""Shared matplotlib set-up: the Agg backend (no display needed), fonts for Hangul labels, saving."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.viz.fonts import FontChoice, find_korean_font, has_hangul


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a UserError saying how to install matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib; install it with `pip install 'nanoformer[viz]'`") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def label_font(texts):
    """Within the block, text uses a Hangul-capable font when `texts` hold Hangul.

    Yields the FontChoice, or None when no Korean font is needed or none was found (the caller
    reports the latter; matplotlib's per-glyph warnings are silenced so the message is said once).
    """
    import matplotlib

    choice: FontChoice | None = find_korean_font() if has_hangul(texts) else None
    rc = {"font.family": [choice.name, "DejaVu Sans"]} if choice else {}
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Glyph \d+ .*missing from.*")
        warnings.filterwarnings("ignore", message=r".*missing from font.*")
        yield choice


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save and close the figure; a path that cannot be written is a UserError.

    PNGs are stored with a 256-colour palette: plots have few colours (viridis itself has 256),
    and the files come out several times smaller.
    """
    plt = pyplot()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            import io

            from PIL import Image

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            buffer.seek(0)
            with Image.open(buffer) as image:
                image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        else:
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror or error}); choose a writable output path") from None
    finally:
        plt.close(fig)
    return path

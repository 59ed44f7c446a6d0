"""One self-contained HTML page to explore attention, offline: a head view and a model view.

Everything is inline (data as JSON, script, style); the page loads nothing, and its
Content-Security-Policy forbids any request, so it opens from a file with no network at all.

- Head view: the query tokens on the left, the key tokens on the right, one line per weight
  (opacity = weight) for the chosen kind of attention, layer and head (or the mean of the
  heads). Hovering a token keeps only its lines and prints its weights beside the other column.
- Weights: the same layer and head as a heatmap; hovering a cell names the pair and its weight.
- Model view: every layer (rows) × head (columns) as a thumbnail; clicking one opens it above.

A page that embeds this one (the server's playground) drives it through
`window.nanoformerAttention`: `data` (what is drawn) and `show({kind, layer, head, query})`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.viz.attention import AttentionResult

HTML_FILE = "attention.html"


def page_data(result: AttentionResult, decimals: int = 4) -> dict:
    """The JSON the page embeds: tokens, texts and weights rounded to `decimals`."""
    return {
        "arch": result.arch,
        "source": result.source,
        "target": result.target,
        "target_generated": result.target_generated,
        "notes": result.notes,
        "maps": [
            {
                "kind": m.kind,
                "title": m.title,
                "q": m.query_tokens,
                "k": m.key_tokens,
                "causal": m.causal,
                "layers": m.n_layers,
                "heads": m.n_heads,
                "w": m.weights.double().numpy().round(decimals).tolist(),
            }
            for m in result.maps
        ],
    }


def _script_json(data: dict) -> str:
    """JSON safe inside <script>: no "<", ">", "&" or "/" characters survive, only their escapes."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for ch, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("/", "\\/")):
        text = text.replace(ch, escape)
    return text


def render_html(result: AttentionResult, title: str = "nanoformer: attention") -> str:
    """The page as a string."""
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (_TEMPLATE.replace("__TITLE__", safe_title)
            .replace("__STYLE__", _asset("attention.css"))
            .replace("__SCRIPT__", _asset("attention.js"))
            .replace("__DATA__", _script_json(page_data(result))))


@functools.cache
def _asset(name: str) -> str:
    """The page's script and style, kept as real .js and .css files beside this module."""
    return (Path(__file__).parent / "page" / name).read_text(encoding="utf-8")


def script_source() -> str:
    """The Content-Security-Policy source that allows the page's one script: a server that shows
    the page inside its own (the playground's iframe) lists it in its policy."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(_asset("attention.js").encode("utf-8")).digest()).decode() + "'"


def write_html(result: AttentionResult, out_dir: str | Path, title: str = "nanoformer: attention") -> Path:
    path = Path(out_dir) / HTML_FILE
    try:
        path.write_text(render_html(result, title), encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror or error}); choose a writable --out folder") from None
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<h1>__TITLE__</h1>
<p id="summary"></p>
<ul id="notes"></ul>
<div id="controls">
  <label>Attention <select id="kind"></select></label>
  <label>Layer <select id="layer"></select></label>
  <label>Head <select id="head"></select></label>
</div>
<div id="views">
<section id="head-view">
  <h2>Head view</h2>
  <p class="hint">Left: queries (the tokens that look). Right: keys (the tokens looked at). Line opacity is
  the weight. Hover a token to keep only its lines and read its weights.</p>
  <svg id="head-svg" width="300" height="100" role="img" aria-label="attention lines"></svg>
</section>
<section id="matrix-view">
  <h2>Weights</h2>
  <p class="hint">Rows: queries; columns: keys; each row sums to 1. Hover a cell.</p>
  <canvas id="matrix" width="300" height="300"></canvas>
  <p id="cell-info">&nbsp;</p>
</section>
</div>
<section id="model-view">
  <h2>Model view</h2>
  <p class="hint">Every layer (rows) and head (columns) of the chosen attention; click one to open it above.</p>
  <div id="model-grid"></div>
</section>
<script type="application/json" id="attention-data">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

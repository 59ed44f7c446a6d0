"""`nanoformer serve`: trained models behind an HTTP API and a web playground.

- `app.py`: the Starlette app, its routes and the page at `/`;
- `schemas.py`: the request bodies (pydantic), OpenAI's shapes where one exists;
- `registry.py`: the loaded models, by name and family;
- `batching.py`: one queue per model; requests that arrive together run as one batch;
- `work.py`: what a batch does with a model (generate, translate, fill-mask, embed, ...);
- `guards.py`: the ASGI layers every request crosses first (body size, API key, metrics);
- `errors.py`: errors in OpenAI's shape; `metrics.py`: Prometheus counters and histograms.
"""

from nanoformer.serve.app import create_app
from nanoformer.serve.registry import ServedModel, load_models
from nanoformer.serve.settings import ServeSettings

__all__ = ["ServeSettings", "ServedModel", "create_app", "load_models"]

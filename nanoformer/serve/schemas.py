"""Request bodies, validated by pydantic: a wrong type or a value out of range is a 400 naming the field.

Text generation takes OpenAI's completion fields (so the `openai` client works unchanged) plus
`top_k` and `repetition_penalty`; embeddings take OpenAI's embedding fields. Unknown fields are
ignored, as OpenAI's clients send some that do not apply here (`user`, `logprobs`).
"""

from __future__ import annotations

import json
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanoformer.serve.errors import APIError

Texts = str | list[str]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str


class CompletionRequest(Body):
    prompt: Texts
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=100.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0)
    stop: Texts | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    truncate: bool = True  # a prompt longer than the context keeps its last tokens; False: 400


class TranslateRequest(Body):
    text: Texts
    beam_size: int | None = Field(None, ge=1, le=16)  # None: the checkpoint's generation settings, else 4
    max_tokens: int | None = Field(None, ge=1)
    length_penalty: float | None = Field(None, ge=0.0, le=10.0)  # None: the checkpoint's, else 1.0
    return_attention: bool = False
    attention_layers: Literal["last", "all"] = "last"
    attention_heads: Literal["mean", "all"] = "mean"
    truncate: bool = True


class FillMaskRequest(Body):
    text: Texts
    top_k: int = Field(5, ge=1, le=100)


class EmbeddingsRequest(Body):
    input: Texts
    encoding_format: Literal["float", "base64"] = "float"
    truncate: bool = True


class ClassifyRequest(Body):
    text: Texts
    pair: Texts | None = None
    truncate: bool = True


class AttentionRequest(Body):
    text: str
    target: str | None = None  # translation models: the target text to read (default: its own translation)
    format: Literal["json", "html"] = "json"


Request = TypeVar("Request", bound=Body)


def parse_body(raw: bytes, schema: type[Request]) -> Request:
    """The request body as `schema`, or an APIError(400) that names the byte, line or field at fault."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise APIError(400, f"the request body is not valid UTF-8 (byte {error.start}); send JSON encoded as UTF-8",
                       code="invalid_utf8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise APIError(400, f"the request body is not valid JSON: {error.msg} at line {error.lineno} column "
                       f"{error.colno}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = max(error.errors(), key=lambda e: len(e["loc"]))  # in a union, the member that got furthest
        param = field_name(first["loc"])
        raise APIError(400, f"{param}: {first['msg']}" + (f" (got {_shown(first)})" if "input" in first else ""),
                       param=param, code="invalid_value") from None


def field_name(loc: tuple) -> str:
    """`("text", "list[str]", 2)` -> `text[2]`: the field and its indices, without pydantic's union tags."""
    name = str(loc[0]) if loc else "body"
    return name + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))


def _shown(error: dict) -> str:
    value = error["input"]
    if isinstance(value, dict) and error["type"] == "missing":
        return "nothing"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def as_list(texts: Texts | None) -> list[str]:
    if texts is None:
        return []
    return [texts] if isinstance(texts, str) else list(texts)

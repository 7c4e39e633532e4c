"""OpenAI chat-completions request bodies → validated engine input, and errors in OpenAI's JSON shape.

Supported body fields: model, messages (string or text-part content; tools are rendered into M1's prompt),
stream, stream_options.include_usage, temperature, top_p, max_tokens / max_completion_tokens, stop, seed, n (1),
and extras (pass them with the client's `extra_body`): `thinking_budget` (reasoning tokens before the think
block is closed for the model), `force_think_start` (append "<think>\\n" to the prompt as the studio does;
off by default, so the API serves M1 as it is) and vLLM's `ignore_eos` (generate past the end-of-sentence token,
up to max_tokens: benchmarks, tests). Other OpenAI fields are accepted and ignored. The fields' shapes and ranges
are pydantic models (studio.api_schema); a ValidationError becomes a 400 whose `param` is the field.
"""
import reprlib
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from engine.serving.sampling import SamplingParams
from studio.api_schema import ChatCompletionBody
from studio.generation import THINK_START


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as a JSON response with its status code."""
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


@dataclass
class CompletionRequest:
    """A validated request: prompt ids and how to generate."""
    prompt_ids: list[int]
    keep_at: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    force_think_start: bool
    thinking_budget: int | None
    session_id: str | None = None  # `user` (or the X-Session-Id header): its turns go to one engine replica
    tools: object = None  # studio.api_tools.ToolSettings, set by the API service
    forced_output: list[int] = field(default_factory=list)


def parse_request(body, *, model_names: list[str], tokenizer, window: int) -> CompletionRequest:
    """Validate a chat-completions body; raise APIError (400 bad field, 404 unknown model, 400 over the window)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model not in model_names:
        raise APIError(404, f"The model `{model}` does not exist; this server serves {', '.join(model_names)}",
                       param="model", code="model_not_found")
    fields = validated(ChatCompletionBody, body)
    force_think = bool(fields.force_think_start)
    prompt_ids = _encode(body, tokenizer)
    keep_at = [len(prompt_ids)] if force_think else []
    if force_think:
        prompt_ids = prompt_ids + tokenizer.encode(THINK_START)
    params = SamplingParams(temperature=_or(fields.temperature, 1.0), top_p=_or(fields.top_p, 1.0),
                            max_tokens=_max_tokens(fields, len(prompt_ids), window), seed=fields.seed,
                            stop=fields.stop, ignore_eos=bool(fields.ignore_eos))
    include_usage = bool(fields.stream_options and fields.stream_options.include_usage)
    return CompletionRequest(prompt_ids, keep_at, params, bool(fields.stream), include_usage, force_think,
                             fields.thinking_budget, fields.user or None)


def validated(model: type[BaseModel], body: dict) -> BaseModel:
    """`model` validated from `body`, or APIError 400 naming the field (the most specific of its first errors)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _field_error(model, exc) from None


def _field_error(model: type[BaseModel], exc: ValidationError) -> APIError:
    errors = exc.errors()
    top = errors[0]["loc"][0]  # extra fields are allowed: every error is about a declared field
    error = max((e for e in errors if e["loc"][0] == top), key=lambda e: len(e["loc"]))  # the first of the deepest
    loc = error["loc"]
    param = f"{top}[{loc[1]}]" if len(loc) > 1 and isinstance(loc[1], int) else top
    got = "" if error["type"] == "missing" else f" (got {reprlib.repr(error['input'])})"
    return APIError(400, f"{_path(loc)}: {error['msg']}{got}; {top} must be {model.model_fields[top].description}",
                    param=param)


def _path(loc: tuple) -> str:
    """('tools', 0, 'function', 'name') -> tools[0].function.name; pydantic's union tags ('str', 'NamedChoice',
    "literal[...]", "list[TextPart]": the schema's unions have no int, float or bool member) are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part != "str" and not part[0].isupper():
            out += f".{part}" if out else part
    return out


def _encode(body: dict, tokenizer) -> list[int]:
    """The raw messages (validated) as the tokenizer renders them, with the tools in M1's prompt."""
    try:
        return tokenizer.encode_chat(body["messages"], tools=body.get("tools") or None)
    except (ValueError, KeyError, TypeError) as exc:
        raise APIError(400, f"invalid messages: {exc}", param="messages") from None


def _max_tokens(fields: ChatCompletionBody, prompt_tokens: int, window: int) -> int:
    value = _or(fields.max_completion_tokens, fields.max_tokens)
    requested = prompt_tokens + (value or 1)  # at least one token must fit after the prompt
    if requested > window:
        what = f"{prompt_tokens:,} in the messages" + (f", {value:,} in the completion" if value else "")
        raise APIError(400, f"This model's maximum context length is {window:,} tokens. However, you requested "
                            f"{requested:,} tokens ({what}): over by {requested - window:,} tokens. "
                            "Please reduce the length of the messages or the completion.",
                       param="messages", code="context_length_exceeded")
    return value or window - prompt_tokens


def _or(value, default):
    return default if value is None else value

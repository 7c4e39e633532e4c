"""OpenAI chat-completions request bodies → validated engine input, and errors in OpenAI's JSON shape.

Supported body fields: model, messages (string or text-part content; tools are rendered into M1's prompt),
stream, stream_options.include_usage, temperature, top_p, max_tokens / max_completion_tokens, stop, seed, n (1),
and two extras (pass them with the client's `extra_body`): `thinking_budget` (reasoning tokens before the think
block is closed for the model) and `force_think_start` (append "<think>\\n" to the prompt as the studio does;
off by default, so the API serves M1 as it is). Other OpenAI fields are accepted and ignored.
"""
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

from engine.serving.sampling import SEED_RANGE, SamplingParams
from studio.generation import THINK_START

MAX_STOP_STRINGS = 4


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
    if body.get("n") not in (None, 1):
        raise APIError(400, f"n must be 1, got {body.get('n')!r}", param="n")
    force_think = _flag(body, "force_think_start")
    prompt_ids = _encode(body, tokenizer)
    keep_at = [len(prompt_ids)] if force_think else []
    if force_think:
        prompt_ids = prompt_ids + tokenizer.encode(THINK_START)
    max_tokens = _max_tokens(body, len(prompt_ids), window)
    params = SamplingParams(temperature=_number(body, "temperature", 1.0, 0, 2), top_p=_top_p(body),
                            max_tokens=max_tokens, seed=_seed(body), stop=_stop(body))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", param="stream_options")
    budget = body.get("thinking_budget")
    if budget is not None and (not _is_int(budget) or budget < 0):
        raise APIError(400, f"thinking_budget must be an integer >= 0, got {budget!r}", param="thinking_budget")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise APIError(400, f"user must be a string, got {user!r}", param="user")
    return CompletionRequest(prompt_ids, keep_at, params, _flag(body, "stream"),
                             bool(options.get("include_usage")), force_think, budget, user or None)


def _encode(body: dict, tokenizer) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    try:
        return tokenizer.encode_chat(messages, tools=body.get("tools") or None)
    except (ValueError, KeyError, TypeError) as exc:
        raise APIError(400, f"invalid messages: {exc}", param="messages") from None


def _max_tokens(body: dict, prompt_tokens: int, window: int) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    if value is not None and (not _is_int(value) or value < 1):
        raise APIError(400, f"{name} must be an integer >= 1, got {value!r}", param=name)
    requested = prompt_tokens + (value or 1)
    if requested > window or prompt_tokens >= window:
        over = max(requested, prompt_tokens + 1) - window
        what = f"{prompt_tokens:,} in the messages" + (f", {value:,} in the completion" if value else "")
        raise APIError(400, f"This model's maximum context length is {window:,} tokens. However, you requested "
                            f"{max(requested, prompt_tokens + 1):,} tokens ({what}): over by {over:,} tokens. "
                            "Please reduce the length of the messages or the completion.",
                       param="messages", code="context_length_exceeded")
    return value or window - prompt_tokens


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise APIError(400, f"{name} must be a number between {low} and {high}, got {value!r}", param=name)
    return float(value)


def _top_p(body: dict) -> float:
    top_p = _number(body, "top_p", 1.0, 0, 1)
    if top_p == 0:
        raise APIError(400, "top_p must be greater than 0", param="top_p")
    return top_p


def _seed(body: dict) -> int | None:
    seed = body.get("seed")
    low, high = SEED_RANGE
    if seed is not None and (not _is_int(seed) or not low <= seed <= high):
        raise APIError(400, f"seed must be an integer from {low} to {high}, got {seed!r}", param="seed")
    return seed


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise APIError(400, f"stop must be a string or a list of up to {MAX_STOP_STRINGS} strings, got {stop!r}",
                       param="stop")
    return stops


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is not None and not isinstance(value, bool):
        raise APIError(400, f"{name} must be true or false, got {value!r}", param=name)
    return bool(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

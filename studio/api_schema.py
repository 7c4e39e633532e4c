"""The OpenAI chat-completions request body as pydantic models: `ChatCompletionBody` and its parts.

Strict types (no "0.5" for a number, no true for an integer), finite numbers, OpenAI's ranges; fields we do not
read are allowed and ignored, as OpenAI clients send many. Each top-level field's description is the hint an
error message ends with (studio.api_request turns a ValidationError into an OpenAI 400). What needs the tokenizer
or another field (the context window, tool_choice naming an offered tool) is checked by the callers.
"""
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from engine.serving.sampling import SEED_RANGE

MAX_STOP_STRINGS = 4
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


# --- messages ---------------------------------------------------------------------------------------------------
class TextPart(_Part):
    type: Literal["text"]
    text: str


class CalledFunction(_Part):
    name: str
    arguments: str | dict[str, Any] | None = None


class ToolCall(_Part):
    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class Message(_Part):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only in an assistant message with tool_calls)")
        return self


# --- tools and structured output --------------------------------------------------------------------------------
class FunctionDef(_Part):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Part):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Part):
    name: str


class NamedChoice(_Part):
    type: Literal["function"]
    function: NamedFunction


class SchemaSpec(_Part):
    name: str = Field(default="response", pattern=NAME_PATTERN)
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Part):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: SchemaSpec | None = None

    @model_validator(mode="after")
    def _has_schema(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self


class ToolFields(_Part):
    """The body's tool and structured-output fields (studio.api_tools reads them)."""
    tools: list[ToolDef] | None = Field(None, description="a list of {type: function, function: {name, ...}}")
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = Field(
        None, description="'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")
    parallel_tool_calls: bool | None = Field(None, description="true or false")
    response_format: ResponseFormat | None = Field(
        None, description="{type: text | json_object | json_schema, json_schema: {name, schema}}")

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools):
        names = [t.function.name for t in tools or []]
        if len(set(names)) != len(names):
            raise ValueError("function names must be unique")
        return tools


# --- the body ---------------------------------------------------------------------------------------------------
def _stop_list(value):
    return [] if value is None else [value] if isinstance(value, str) else value


class StreamOptions(_Part):
    include_usage: bool | None = None


class ChatCompletionBody(ToolFields):
    """A chat-completions body; `None` stands for a field left out (OpenAI's defaults apply)."""
    model: str | None = Field(None, description="the served model's name")
    messages: list[Message] = Field(min_length=1, description="a non-empty list of {role, content} objects")
    n: Literal[1] | None = Field(None, description="1 (one choice per request)")
    max_tokens: int | None = Field(None, ge=1, description="an integer >= 1")
    max_completion_tokens: int | None = Field(None, ge=1, description="an integer >= 1")
    temperature: float | None = Field(None, ge=0, le=2, description="a number from 0 to 2")
    top_p: float | None = Field(None, gt=0, le=1, description="a number greater than 0, at most 1")
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1],
                             description=f"an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}")
    stop: Annotated[list[str], BeforeValidator(_stop_list)] = Field(
        [], max_length=MAX_STOP_STRINGS, description=f"a string or a list of up to {MAX_STOP_STRINGS} strings")
    stream: bool | None = Field(None, description="true or false")
    stream_options: StreamOptions | None = Field(None, description="an object {include_usage: bool}")
    user: str | None = Field(None, description="a string")
    # extras (the client's extra_body)
    thinking_budget: int | None = Field(None, ge=0, description="an integer >= 0")
    force_think_start: bool | None = Field(None, description="true or false")
    ignore_eos: bool | None = Field(None, description="true or false")
    force_output: str | None = Field(None, min_length=1, description="a non-empty string")

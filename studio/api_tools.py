"""The OpenAI request's tool and structured-output parts: `tools`, `tool_choice`, `parallel_tool_calls`,
`response_format`, validated with pydantic (shapes) and jsonschema (the function schemas, and the arguments of
the history's tool calls); what the reply must look like becomes an xgrammar constraint.

- tool_choice "none": tools stay in the prompt, the output is not parsed for calls;
- "auto" (default with tools): calls in the output are parsed, the model is free;
- "required" / {"type": "function", "function": {"name": ...}}: the grammar forces a call (to that function)
  whose arguments match its schema, after a free think block;
- response_format json_object / json_schema: the grammar forces a JSON answer (or a call, with tools on auto).
Every problem is an APIError 400 naming the field.
"""
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.text import output_format
from studio.api_request import APIError

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionDef(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Model):
    type: Literal["function"]
    function: FunctionDef


class NamedChoice(_Model):
    type: Literal["function"]
    function: dict[str, str]


class SchemaSpec(_Model):
    name: str = Field(default="response", pattern=NAME_PATTERN)
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: SchemaSpec | None = None


@dataclass
class ToolSettings:
    """What the request asks of the reply's shape."""
    functions: list[dict]
    choice: str  # none | auto | required | function (then `forced` names it)
    forced: str | None
    parallel: bool
    json_schema: dict | None  # response_format: the schema of a JSON answer ({"type": "object"} for json_object)

    @property
    def parse_calls(self) -> bool:
        return bool(self.functions) and self.choice != "none"

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.functions]

    def structure(self, starts_in_reasoning: bool) -> dict | None:
        """The structural tag the reply must follow, or None when the model is free."""
        offered = [f for f in self.functions if self.forced in (None, f["name"])]
        calls = output_format.tool_calls_format(offered, self.parallel) if self.functions else None
        answer = output_format.json_format(self.json_schema) if self.json_schema is not None else None
        if self.choice in ("required", "function"):
            body = calls
        elif answer is not None and self.parse_calls:
            body = {"type": "or", "elements": [calls, answer]}
        else:
            body = answer
        return None if body is None else output_format.structural_tag(body, starts_in_reasoning)


def parse_tools(body: dict) -> ToolSettings:
    """Validate tools, tool_choice, parallel_tool_calls, response_format and the history's tool calls."""
    functions = _functions(body.get("tools"))
    choice, forced = _choice(body.get("tool_choice"), functions)
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise APIError(400, f"parallel_tool_calls must be true or false, got {parallel!r}", param="parallel_tool_calls")
    settings = ToolSettings(functions, choice, forced, parallel, _response_schema(body.get("response_format")))
    if settings.json_schema is not None and choice in ("required", "function"):
        raise APIError(400, "response_format cannot be combined with a forced tool call (tool_choice "
                            f"{body.get('tool_choice')!r})", param="response_format")
    _check_history(body.get("messages"), functions)
    return settings


def call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return "call_" + uuid.uuid4().hex[:24]


def _functions(tools) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise APIError(400, "tools must be a list of {type: function, function: {...}} objects", param="tools")
    out = []
    for i, tool in enumerate(tools):
        try:
            function = ToolDef.model_validate(tool).function
        except ValidationError as exc:
            raise APIError(400, f"tools[{i}]: {_first_error(exc)}", param=f"tools[{i}]") from None
        if function.parameters is not None:
            _check_schema(function.parameters, f"tools[{i}].function.parameters")
        out.append(function.model_dump(exclude_none=True))
    names = [f["name"] for f in out]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: function names must be unique", param="tools")
    return out


def _choice(choice, functions: list[dict]) -> tuple[str, str | None]:
    if choice is None:
        return ("auto" if functions else "none"), None
    if choice in ("none", "auto", "required"):
        if choice == "required" and not functions:
            raise APIError(400, "tool_choice 'required' needs at least one tool in tools", param="tool_choice")
        return choice, None
    try:
        name = NamedChoice.model_validate(choice).function["name"]
    except (ValidationError, KeyError):
        raise APIError(400, "tool_choice must be 'none', 'auto', 'required' or "
                            "{'type': 'function', 'function': {'name': ...}}", param="tool_choice") from None
    if name not in [f["name"] for f in functions]:
        raise APIError(400, f"tool_choice names the function {name!r}, which is not in tools", param="tool_choice")
    return "function", name


def _response_schema(response_format) -> dict | None:
    if response_format is None:
        return None
    try:
        spec = ResponseFormat.model_validate(response_format)
    except ValidationError as exc:
        raise APIError(400, f"response_format: {_first_error(exc)}", param="response_format") from None
    if spec.type == "text":
        return None
    if spec.type == "json_object":
        return dict(output_format.ANY_OBJECT)
    if spec.json_schema is None:
        raise APIError(400, "response_format json_schema needs a json_schema object", param="response_format")
    _check_schema(spec.json_schema.schema_, "response_format.json_schema.schema")
    return spec.json_schema.schema_


def _check_history(messages, functions: list[dict]) -> None:
    """Assistant tool calls in the history must name an offered tool and carry arguments matching its schema."""
    if not isinstance(messages, list) or not functions:
        return
    by_name = {f["name"]: f for f in functions}
    for i, message in enumerate(messages):
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            where = f"messages[{i}].tool_calls[{j}]"
            if name not in by_name:
                raise APIError(400, f"{where}: unknown tool {name!r}; tools offer {', '.join(by_name)}", param=where)
            _check_arguments(function.get("arguments", "{}"), by_name[name].get("parameters"), where)


def _check_arguments(arguments, schema: dict | None, where: str) -> None:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError as exc:
        raise APIError(400, f"{where}: arguments are not valid JSON ({exc})", param=where) from None
    if schema is not None:
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            raise APIError(400, f"{where}: arguments do not match the function's schema: {exc.message}",
                           param=where) from None


def _check_schema(schema: dict, where: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise APIError(400, f"{where} is not a valid JSON schema: {exc.message}", param=where) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"


def forced_output(body: dict, tokenizer) -> list[int]:
    """`force_output` (extra body field): text the completion starts with, forced through the engine as if the
    model wrote it (replays and tests); a trailing <end_of_sentence> ends the completion there."""
    text = body.get("force_output")
    if text is None:
        return []
    if not isinstance(text, str) or not text:
        raise APIError(400, "force_output must be a non-empty string", param="force_output")
    eos = "<end_of_sentence>"
    ids = tokenizer.encode(text.removesuffix(eos))
    return ids + ([tokenizer.token_id(eos)] if text.endswith(eos) else [])

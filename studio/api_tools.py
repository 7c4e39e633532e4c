"""The OpenAI request's tool and structured-output parts: `tools`, `tool_choice`, `parallel_tool_calls`,
`response_format`, validated with pydantic (their shapes: studio.api_schema) and jsonschema (the function schemas,
and the arguments of the history's tool calls); what the reply must look like becomes an xgrammar constraint.

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

import jsonschema

from engine.text import output_format
from studio.api_request import APIError, validated
from studio.api_schema import NamedChoice, ToolFields


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
    fields = validated(ToolFields, body)
    functions = _functions(fields)
    choice, forced = _choice(fields.tool_choice, functions)
    parallel = fields.parallel_tool_calls is not False
    settings = ToolSettings(functions, choice, forced, parallel, _response_schema(fields))
    if settings.json_schema is not None and choice in ("required", "function"):
        raise APIError(400, "response_format cannot be combined with a forced tool call (tool_choice "
                            f"{body.get('tool_choice')!r})", param="response_format")
    _check_history(body.get("messages"), functions)
    return settings


def call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return "call_" + uuid.uuid4().hex[:24]


def _functions(fields: ToolFields) -> list[dict]:
    out = []
    for i, tool in enumerate(fields.tools or []):
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
        out.append(tool.function.model_dump(exclude_none=True))
    return out


def _choice(choice, functions: list[dict]) -> tuple[str, str | None]:
    if choice is None:
        return ("auto" if functions else "none"), None
    if choice == "required" and not functions:
        raise APIError(400, "tool_choice 'required' needs at least one tool in tools", param="tool_choice")
    if not isinstance(choice, NamedChoice):
        return choice, None
    if choice.function.name not in [f["name"] for f in functions]:
        raise APIError(400, f"tool_choice names the function {choice.function.name!r}, which is not in tools",
                       param="tool_choice")
    return "function", choice.function.name


def _response_schema(fields: ToolFields) -> dict | None:
    spec = fields.response_format
    if spec is None or spec.type == "text":
        return None
    if spec.type == "json_object":
        return dict(output_format.ANY_OBJECT)
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


def forced_output(text: str | None, tokenizer) -> list[int]:
    """`force_output` (extra body field, validated by the body schema): text the completion starts with, forced
    through the engine as if the model wrote it (replays, tests); a trailing <end_of_sentence> ends it there."""
    if not text:
        return []
    eos = "<end_of_sentence>"
    ids = tokenizer.encode(text.removesuffix(eos))
    return ids + ([tokenizer.token_id(eos)] if text.endswith(eos) else [])

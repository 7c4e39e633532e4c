"""The shape of M1's output as xgrammar structural tags (plain dicts; compiled in engine.serving.grammar).

Every structure starts with M1's think block as free text (`<think>` … `</think>`; optional unless the prompt
already opened it) and constrains only what follows:
- `tool_calls_format`: `<tool_calls>\\n` + one `{"name": NAME, "arguments": ARGS}` line per call (ARGS matching
  that tool's parameter schema) + `\\n</tool_calls>`, exactly the lines chat_format replays;
- `json_format`: a JSON value matching a schema (response_format json_schema / json_object).
Whitespace inside the JSON is bounded (`MAX_WHITESPACE`) so a constrained generation cannot run on in blanks.
"""
import json

from .reasoning import CLOSE_TAG, OPEN_TAG
from .tool_calls import CLOSE_TAG as CALLS_CLOSE, OPEN_TAG as CALLS_OPEN

MAX_WHITESPACE = 2
ANY_OBJECT = {"type": "object"}


def structural_tag(body: dict, starts_in_reasoning: bool = False) -> dict:
    """The whole output: the think block (free text), the newlines after it, then `body`."""
    think = {"type": "tag", "begin": "" if starts_in_reasoning else OPEN_TAG, "content": {"type": "any_text"},
             "end": CLOSE_TAG}
    if starts_in_reasoning:
        think = {"type": "sequence", "elements": [{"type": "any_text", "excludes": [CLOSE_TAG]},
                                                  {"type": "const_string", "value": CLOSE_TAG}]}
    else:
        think = {"type": "optional", "content": think}
    gap = {"type": "regex", "pattern": "\\n{0,2}"}
    return {"type": "structural_tag", "format": {"type": "sequence", "elements": [think, gap, body]}}


def tool_calls_format(functions: list[dict], parallel: bool = True) -> dict:
    """At least one call (only one when not `parallel`) to one of `functions` (bare {"name", "parameters"})."""
    tags = [{"type": "tag", "begin": '{"name": ' + json.dumps(f["name"], ensure_ascii=False) + ', "arguments": ',
             "content": _schema(f.get("parameters") or ANY_OBJECT), "end": "}"} for f in functions]
    calls = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True,
             "stop_after_first": not parallel}
    return {"type": "sequence", "elements": [{"type": "const_string", "value": CALLS_OPEN + "\n"}, calls,
                                             {"type": "const_string", "value": "\n" + CALLS_CLOSE}]}


def json_format(schema: dict | None = None) -> dict:
    """A JSON value matching `schema` (None: any JSON object)."""
    return _schema(schema if schema is not None else ANY_OBJECT)


def _schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": MAX_WHITESPACE}

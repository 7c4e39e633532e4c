"""MiniMax-M1 chat format: messages -> prompt text, as (text, is_special_marker) segments.

Reproduces the official template of M1's tokenizer_config.json (M1_SPEC §9), with three additions that
leave the official output unchanged where the official template works:
- content may be a plain string or a list of text parts (official: list only, and it reads only the first part
  of system/user messages; we join all text parts);
- OpenAI-style tools ({"type": "function", "function": {...}}) are unwrapped to the bare function dict M1 saw
  in training; an assistant message's OpenAI `tool_calls` are replayed in M1's `<tool_calls>` output format;
- a tool result without a name takes it from the assistant tool call whose id matches `tool_call_id`.
`CHAT_TEMPLATE` is the same format as a Jinja string for tokenizer_config.json; a test checks both agree.
"""
import json
import re

BEGIN_OF_DOCUMENT = "<begin_of_document>"
BOS = "<beginning_of_sentence>"
EOS = "<end_of_sentence>"
SPECIAL_MARKERS = (BEGIN_OF_DOCUMENT, BOS, EOS)
ROLES = ("system", "user", "assistant", "tool")

TOOLS_HEADER = "system tool_setting=tools\nYou are provided with these tools:\n<tools>\n"
TOOLS_FOOTER = (
    "</tools>\n\nIf you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide "
    "tool-name and json-object of arguments, following the format below:\n<tool_calls>\n"
    '{"name": <tool-name-1>, "arguments": <args-json-object-1>}\n...\n</tool_calls>'
)
ROLE_HEADERS = {
    "system": "system ai_setting=assistant\n",
    "user": "user name=user\n",
    "assistant": "ai name=assistant\n",
    "tool": "tool name=tools\n",
}
_THINK_BLOCK = re.compile(r"\s*<think>.*?</think>\n?", re.DOTALL)


def render(messages, tools=None, add_generation_prompt=True) -> str:
    """The prompt string for `messages` (OpenAI-style dicts) exactly as M1's chat template renders it."""
    return "".join(text for text, _ in segments(messages, tools, add_generation_prompt))


def segments(messages, tools=None, add_generation_prompt=True) -> list[tuple[str, bool]]:
    """The prompt as (text, is_special_marker) pieces; markers become special ids, the rest plain text.

    Raises ValueError naming the message (by index) or tool that is malformed.
    """
    _check_messages(messages)
    out = [(BEGIN_OF_DOCUMENT, True)]
    system = "".join(content_text(m["content"], i) for i, m in enumerate(messages) if m["role"] == "system")
    if system:
        out += _turn(ROLE_HEADERS["system"] + system)
    if tools:
        bare = [_bare_tool(tool, i) for i, tool in enumerate(_tool_list(tools))]
        lines = "".join(json.dumps(tool, ensure_ascii=False) + "\n" for tool in bare)
        out += _turn(TOOLS_HEADER + lines + TOOLS_FOOTER)
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "user":
            out += _turn(ROLE_HEADERS["user"] + content_text(message["content"], i))
        elif role == "assistant":
            out += _turn(ROLE_HEADERS["assistant"] + _assistant_text(message, i))
        elif role == "tool":
            out += _turn(ROLE_HEADERS["tool"] + _tool_results(messages, i))
    if add_generation_prompt:
        out += [(BOS, True), (ROLE_HEADERS["assistant"], False)]
    return [(text, special) for text, special in out if text]


def content_text(content, index: int) -> str:
    """Join the text of a message's content (a string or a list of {"type": "text", "text": ...} parts)."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in _parts(content, index))


def strip_think(text: str) -> str:
    """Remove a leading `<think>...</think>` block (and the newline after it) from an assistant reply."""
    match = _THINK_BLOCK.match(text)
    return text[match.end():] if match else text


def _turn(body: str) -> list[tuple[str, bool]]:
    return [(BOS, True), (body, False), (EOS, True), ("\n", False)]


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty; give at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {i}: must be a dict with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None and role == "assistant" and message.get("tool_calls"):
            continue
        if not isinstance(content, (str, list)):
            raise ValueError(f"message {i} ({role}): content must be a string or a list of text parts, "
                             f"got {type(content).__name__}")
        if isinstance(content, list):
            _parts(content, i)


def _parts(content: list, index: int) -> list[dict]:
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"message {index}: content part {j} must be {{'type': 'text', 'text': str}} "
                             f"(got {kind!r}); only text parts are supported")
    return content


def _assistant_text(message: dict, index: int) -> str:
    content = message.get("content")
    text = "" if content is None else content_text(content, index)
    calls = message.get("tool_calls")
    if not calls:
        return text
    if not isinstance(calls, list):
        raise ValueError(f"message {index}: tool_calls must be a list")
    lines = "".join(_call_line(call, index) + "\n" for call in calls)
    separator = "\n" if text and not text.endswith("\n") else ""
    return f"{text}{separator}<tool_calls>\n{lines}</tool_calls>"


def _call_line(call, index: int) -> str:
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError(f"message {index}: each tool call needs a function name")
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return '{"name": ' + json.dumps(function["name"], ensure_ascii=False) + ', "arguments": ' + arguments + "}"


def _tool_results(messages: list, index: int) -> str:
    message = messages[index]
    content = message["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    out = []
    for part in parts:
        name = part.get("name") or message.get("name") or _called_name(messages, index, message.get("tool_call_id"))
        if not isinstance(name, str) or not name:
            raise ValueError(f"message {index} (tool): no tool name; set 'name' or a 'tool_call_id' that matches "
                             "an earlier assistant tool call")
        out.append(f"tool name: {name}\ntool result: {part['text']}\n\n")
    return "".join(out)


def _called_name(messages: list, index: int, call_id) -> str | None:
    if call_id is None:
        return None
    for message in reversed(messages[:index]):
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                return (call.get("function") or {}).get("name")
    return None


def _tool_list(tools) -> list:
    if not isinstance(tools, (list, tuple)):
        raise ValueError(f"tools must be a list of dicts, got {type(tools).__name__}")
    return list(tools)


def _bare_tool(tool, index: int) -> dict:
    if not isinstance(tool, dict):
        raise ValueError(f"tool {index}: must be a dict, got {type(tool).__name__}")
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool["function"]
    return tool


_TEXT_MACRO = (
    "{%- macro text_of(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is not none -%}{%- for part in content -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
)
_CALLS_MACRO = (
    "{%- macro calls_of(message) -%}"
    "{%- set text = text_of(message['content']) -%}{{ text }}"
    "{%- if message['tool_calls'] -%}"
    "{%- if text and not text.endswith('\\n') -%}{{ '\\n' }}{%- endif -%}{{ '<tool_calls>\\n' }}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set f = call['function'] if call['function'] is defined else call -%}"
    "{%- set args = f['arguments'] if f['arguments'] is defined else {} -%}"
    "{{ '{\"name\": ' ~ (f['name'] | tojson) ~ ', \"arguments\": ' ~ "
    "(args if args is string else args | tojson) ~ '}\\n' }}"
    "{%- endfor -%}{{ '</tool_calls>' }}"
    "{%- endif -%}"
    "{%- endmacro -%}"
)
_BODY = (
    "{{- '<begin_of_document>' -}}"
    "{%- set ns = namespace(system='', called='') -%}"
    "{%- for message in messages -%}{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + text_of(message['content']) -%}{%- endif -%}{%- endfor -%}"
    "{%- if ns.system != '' -%}"
    "{{- '<beginning_of_sentence>system ai_setting=assistant\\n' + ns.system + '<end_of_sentence>\\n' -}}"
    "{%- endif -%}"
    "{%- if tools -%}{{- '<beginning_of_sentence>" + TOOLS_HEADER.replace("\n", "\\n") + "' -}}"
    "{%- for tool in tools -%}"
    "{%- set bare = tool['function'] if (tool['type'] == 'function' and tool['function'] is mapping) else tool -%}"
    "{{- bare | tojson ~ '\\n' -}}{%- endfor -%}"
    "{{- '" + TOOLS_FOOTER.replace("\n", "\\n").replace("'", "\\'") + "<end_of_sentence>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<beginning_of_sentence>user name=user\\n' + text_of(message['content']) + '<end_of_sentence>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<beginning_of_sentence>ai name=assistant\\n' + calls_of(message) + '<end_of_sentence>\\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{{- '<beginning_of_sentence>tool name=tools\\n' -}}"
    "{%- set message_index = loop.index0 -%}"
    "{%- set parts = [{'text': message['content']}] if message['content'] is string else message['content'] -%}"
    "{%- for part in parts -%}"
    "{%- set ns.called = '' -%}"
    "{%- for earlier in messages[:message_index] -%}{%- for call in earlier['tool_calls'] or [] -%}"
    "{%- if message['tool_call_id'] is defined and call['id'] == message['tool_call_id'] -%}"
    "{%- set ns.called = call['function']['name'] -%}{%- endif -%}{%- endfor -%}{%- endfor -%}"
    "{%- set name = part['name'] or message['name'] or ns.called -%}"
    "{{- 'tool name: ' ~ name ~ '\\n' ~ 'tool result: ' ~ part['text'] ~ '\\n\\n' -}}"
    "{%- endfor -%}"
    "{{- '<end_of_sentence>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<beginning_of_sentence>ai name=assistant\\n' -}}{%- endif -%}"
)
CHAT_TEMPLATE = _TEXT_MACRO + _CALLS_MACRO + _BODY

"""Streaming parser of M1 output into reasoning, content and tool calls: every split of the stream gives the same
result as the whole text, several calls, calls after text, malformed lines kept as text, calls inside the think
block staying reasoning."""
import json
import random

import pytest

from engine.text.tool_calls import OutputParser, ToolCall, parse, parse_call

W = '{"name": "get_weather", "arguments": {"location": "San Francisco, CA", "unit": "celsius"}}'
T = '{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}'
W_ARGS = json.dumps({"location": "San Francisco, CA", "unit": "celsius"})
T_ARGS = json.dumps({"tz": "Europe/Paris"})
NAMES = ["get_weather", "get_time"]

# name: (text, (reasoning, content, [(name, arguments)]))
CASES = {
    "one_call_after_think": (f"<think>\nneed weather\n</think>\n<tool_calls>\n{W}\n</tool_calls>",
                             ("need weather", "", [("get_weather", W_ARGS)])),
    "two_calls": (f"<think>\nx\n</think>\n<tool_calls>\n{W}\n{T}\n</tool_calls>",
                  ("x", "", [("get_weather", W_ARGS), ("get_time", T_ARGS)])),
    "text_then_call": (f"Let me check.\n<tool_calls>\n{W}\n</tool_calls>",
                       ("", "Let me check.", [("get_weather", W_ARGS)])),
    "text_after_block": (f"<tool_calls>\n{W}\n</tool_calls>\nDone.", ("", "Done.", [("get_weather", W_ARGS)])),
    "plain_answer": ("<think>\nhm\n</think>\nIt is 4.", ("hm", "It is 4.", [])),
    "malformed_block_is_text": ('<tool_calls>\n{"name": "get_weather", "arguments": {bad\n</tool_calls>',
                                ("", '<tool_calls>\n{"name": "get_weather", "arguments": {bad\n</tool_calls>', [])),
    "malformed_line_beside_a_call": (f"<tool_calls>\n{W}\nnot json\n</tool_calls>",
                                     ("", "not json", [("get_weather", W_ARGS)])),
    "unknown_tool_is_text": ('<tool_calls>\n{"name": "rm_rf", "arguments": {}}\n</tool_calls>',
                             ("", '<tool_calls>\n{"name": "rm_rf", "arguments": {}}\n</tool_calls>', [])),
    "call_inside_think_is_reasoning": (f"<think>\n<tool_calls>\n{W}\n</tool_calls>\n</think>\nNo.",
                                       (f"<tool_calls>\n{W}\n</tool_calls>", "No.", [])),
    "unclosed_block": (f"<tool_calls>\n{W}", ("", "", [("get_weather", W_ARGS)])),
    "unclosed_block_with_garbage": ("<tool_calls>\n{\"na", ("", "<tool_calls>\n{\"na", [])),
    "close_tag_on_the_call_line": (f"<tool_calls>\n{W}</tool_calls>", ("", "", [("get_weather", W_ARGS)])),
    "arguments_as_string": ('<tool_calls>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"Europe/Paris\\"}"}\n'
                            "</tool_calls>", ("", "", [("get_time", T_ARGS)])),
    "two_blocks": (f"<tool_calls>\n{W}\n</tool_calls>\nand\n<tool_calls>\n{T}\n</tool_calls>",
                   ("", "and", [("get_weather", W_ARGS), ("get_time", T_ARGS)])),
    "tag_like_text": ("a <tool_call> b <tool_calls", ("", "a <tool_call> b <tool_calls", [])),
}


def run(text, pieces, **kw):
    parser = OutputParser(tool_names=kw.get("names", NAMES), parallel=kw.get("parallel", True))
    events = [e for piece in pieces for e in parser.feed(piece)] + parser.finish()
    reasoning = "".join(e.text for e in events if e.kind == "reasoning")
    content = "".join(e.text for e in events if e.kind == "content")
    calls = [e.call for e in events if e.kind == "tool_call"]
    assert calls == parser.calls
    return reasoning, content, [(c.name, c.arguments) for c in calls]


@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_text(name):
    text, expected = CASES[name]
    assert run(text, [text]) == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_two_way_split_and_char_by_char(name):
    text, expected = CASES[name]
    assert run(text, list(text)) == expected
    for cut in range(1, len(text)):
        assert run(text, [text[:cut], text[cut:]]) == expected, cut


def test_random_splits():
    text = f"<think>\nplan <tool_calls> no\n</think>\nSure.\n<tool_calls>\n{W}\n{T}\n</tool_calls>\nOk."
    expected = ("plan <tool_calls> no", "Sure.Ok.", [("get_weather", W_ARGS), ("get_time", T_ARGS)])
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert run(text, pieces) == expected


def test_calls_stream_as_soon_as_their_line_ends():
    parser = OutputParser(tool_names=NAMES)
    assert parser.feed("<tool_calls>\n" + W[:-5]) == []
    events = parser.feed(W[-5:] + "\n")
    assert [e.kind for e in events] == ["tool_call"] and events[0].call == ToolCall(0, "get_weather", W_ARGS)
    assert parser.feed(T + "\n</tool_calls>")[0].call.index == 1


def test_parallel_off_keeps_the_first_call_and_the_rest_as_text():
    assert run("", [f"<tool_calls>\n{W}\n{T}\n</tool_calls>"], parallel=False) == ("", T, [("get_weather", W_ARGS)])


def test_any_tool_name_without_a_tool_list():
    assert run("", ['<tool_calls>\n{"name": "x", "arguments": {}}\n</tool_calls>'], names=None) == \
        ("", "", [("x", "{}")])


@pytest.mark.parametrize("line", ["", "[]", '"x"', "{}", '{"name": 3}', '{"name": ""}',
                                  '{"name": "get_time", "arguments": [1]}', '{"name": "get_time", "arguments": "{"}',
                                  "[" * 100000])
def test_bad_lines_are_not_calls(line):
    assert parse_call(line, NAMES) is None


def test_parse_whole_generation():
    assert parse(f"plan\n</think>\nok\n<tool_calls>\n{T}\n</tool_calls>", starts_in_reasoning=True) == \
        ("plan", "ok", [ToolCall(0, "get_time", T_ARGS)])


def test_call_json_over_several_lines():
    pretty = '{"name": "get_time",\n "arguments": {\n  "tz": "Europe/Paris"\n }\n}'
    text = f"<tool_calls>\n{pretty}\n{W}\n</tool_calls>"
    expected = ("", "", [("get_time", T_ARGS), ("get_weather", W_ARGS)])
    assert run(text, [text]) == expected and run(text, list(text)) == expected
    assert run("", ['<tool_calls>\n{"name": "get_time",\n</tool_calls>']) == \
        ("", '<tool_calls>\n{"name": "get_time",\n</tool_calls>', [])

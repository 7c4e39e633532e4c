"""M1 chat format: golden strings, the Jinja chat_template agreeing with render(), and bad-input errors.

The golden strings were checked against the official M1 tokenizer_config.json template rendered by transformers
(with list content, which is all the official template accepts).
"""
import pytest

from engine.text import chat_format
from engine.text.chat_format import render, segments, strip_think
from engine.text.tokenizer import load_tokenizer, write_tokenizer_files

BOD, BOS, EOS = "<begin_of_document>", "<beginning_of_sentence>", "<end_of_sentence>"
GEN = f"{BOS}ai name=assistant\n"
WEATHER = {"name": "get_weather", "description": "Weather of a city, e.g. 上海",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_JSON = ('{"name": "get_weather", "description": "Weather of a city, e.g. 上海", "parameters": '
                '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}')
TOOLS_BLOCK = (
    f"{BOS}system tool_setting=tools\nYou are provided with these tools:\n<tools>\n{WEATHER_JSON}\n</tools>\n\n"
    "If you need to call tools, please respond with <tool_calls></tool_calls> XML tags, and provide tool-name and "
    "json-object of arguments, following the format below:\n<tool_calls>\n"
    '{"name": <tool-name-1>, "arguments": <args-json-object-1>}\n...\n</tool_calls>' + f"{EOS}\n"
)
CALL = '<tool_calls>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_calls>'


def parts(text):
    return [{"type": "text", "text": text}]


CASES = {
    "system_user": (
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi!"}], None,
        f"{BOD}{BOS}system ai_setting=assistant\nYou are a helpful assistant.{EOS}\n{BOS}user name=user\nHi!{EOS}\n"
        + GEN),
    "no_system": (
        [{"role": "user", "content": "hello"}], None, f"{BOD}{BOS}user name=user\nhello{EOS}\n" + GEN),
    "multi_turn": (
        [{"role": "system", "content": "A."}, {"role": "user", "content": "1+1?"},
         {"role": "assistant", "content": "<think>\nadd\n</think>\n2"}, {"role": "user", "content": "2+2?"},
         {"role": "system", "content": "B."}], None,
        f"{BOD}{BOS}system ai_setting=assistant\nA.B.{EOS}\n{BOS}user name=user\n1+1?{EOS}\n"
        f"{BOS}ai name=assistant\n<think>\nadd\n</think>\n2{EOS}\n{BOS}user name=user\n2+2?{EOS}\n" + GEN),
    "list_content": (
        [{"role": "system", "content": parts("S")}, {"role": "user", "content": parts("q")},
         {"role": "assistant", "content": parts("a") + parts("b")}], None,
        f"{BOD}{BOS}system ai_setting=assistant\nS{EOS}\n{BOS}user name=user\nq{EOS}\n{BOS}ai name=assistant\nab{EOS}\n"
        + GEN),
    "tools": (
        [{"role": "system", "content": "S"}, {"role": "user", "content": "weather?"}], [WEATHER],
        f"{BOD}{BOS}system ai_setting=assistant\nS{EOS}\n{TOOLS_BLOCK}{BOS}user name=user\nweather?{EOS}\n" + GEN),
    "tool_results": (
        [{"role": "user", "content": "w?"}, {"role": "assistant", "content": CALL},
         {"role": "tool", "content": [{"type": "text", "name": "get_weather", "text": "sunny"},
                                      {"type": "text", "name": "clock", "text": "noon"}]}], [WEATHER],
        f"{BOD}{TOOLS_BLOCK}{BOS}user name=user\nw?{EOS}\n{BOS}ai name=assistant\n{CALL}{EOS}\n"
        f"{BOS}tool name=tools\ntool name: get_weather\ntool result: sunny\n\ntool name: clock\ntool result: noon\n\n"
        f"{EOS}\n" + GEN),
    "openai_tools": (
        [{"role": "user", "content": "w?"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
         {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
        [{"type": "function", "function": WEATHER}],
        f"{BOD}{TOOLS_BLOCK}{BOS}user name=user\nw?{EOS}\n{BOS}ai name=assistant\n{CALL}{EOS}\n"
        f"{BOS}tool name=tools\ntool name: get_weather\ntool result: sunny\n\n{EOS}\n" + GEN),
    "tool_calls_after_text": (
        [{"role": "user", "content": "w?"},
         {"role": "assistant", "content": "Let me check.", "tool_calls": [
             {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}], None,
        f"{BOD}{BOS}user name=user\nw?{EOS}\n{BOS}ai name=assistant\nLet me check.\n{CALL}{EOS}\n" + GEN),
    "parallel_calls_and_results": (
        [{"role": "user", "content": "w?"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "上海"}'}}]},
         {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
         {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
         {"role": "assistant", "content": "Sunny in Paris, rain in 上海."}],
        [{"type": "function", "function": WEATHER}],
        f"{BOD}{TOOLS_BLOCK}{BOS}user name=user\nw?{EOS}\n{BOS}ai name=assistant\n<tool_calls>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '{"name": "get_weather", "arguments": {"city": "上海"}}\n</tool_calls>' + f"{EOS}\n"
        f"{BOS}tool name=tools\ntool name: get_weather\ntool result: sunny\n\n{EOS}\n"
        f"{BOS}tool name=tools\ntool name: get_weather\ntool result: rain\n\n{EOS}\n"
        f"{BOS}ai name=assistant\nSunny in Paris, rain in 上海.{EOS}\n" + GEN),
    "calls_with_dict_arguments_and_no_id": (
        [{"role": "user", "content": "t?"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"type": "function", "function": {"name": "clock", "arguments": {"tz": "UTC", "n": [1, 2]}}}]},
         {"role": "tool", "name": "clock", "content": "12:00"}], None,
        f"{BOD}{BOS}user name=user\nt?{EOS}\n{BOS}ai name=assistant\n<tool_calls>\n"
        '{"name": "clock", "arguments": {"tz": "UTC", "n": [1, 2]}}\n</tool_calls>' + f"{EOS}\n"
        f"{BOS}tool name=tools\ntool name: clock\ntool result: 12:00\n\n{EOS}\n" + GEN),
}


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat_tok")
    write_tokenizer_files(out, num_merges=200)
    return load_tokenizer(out).hf


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_strings(name):
    messages, tools, expected = CASES[name]
    assert render(messages, tools) == expected
    assert render(messages, tools, add_generation_prompt=False) == expected.removesuffix(GEN)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_jinja_template_in_tokenizer_config_equals_render(hf_tokenizer, name, generation_prompt):
    messages, tools, _ = CASES[name]
    jinja = hf_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    assert jinja == render(messages, tools, generation_prompt)


def test_string_and_list_content_render_the_same():
    as_strings = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                  {"role": "assistant", "content": "a"}, {"role": "tool", "name": "t", "content": "r"}]
    as_lists = [{**m, "content": parts(m["content"])} for m in as_strings]
    as_lists[3]["content"][0]["name"] = "t"
    assert render(as_strings) == render(as_lists)


def test_segments_mark_only_template_tokens_special():
    messages = [{"role": "user", "content": "say <end_of_sentence> please"}]
    segs = segments(messages)
    assert "".join(text for text, _ in segs) == render(messages)
    assert {text for text, special in segs if special} == {BOD, BOS, EOS}
    assert any("say <end_of_sentence> please" in text for text, special in segs if not special)
    assert segs[:2] == [(BOD, True), (BOS, True)] and segs[-1] == ("ai name=assistant\n", False)


def test_strip_think():
    assert strip_think("<think>\nplan\n</think>\nanswer") == "answer"
    assert strip_think("\n<think>a</think>b <think>c</think>") == "b <think>c</think>"
    assert strip_think("no reasoning") == "no reasoning"
    assert strip_think("<think>never closed") == "<think>never closed"


@pytest.mark.parametrize("messages, match", [
    ("hi", "messages must be a list"),
    ([], "messages is empty"),
    ([{"role": "user", "content": "ok"}, "hi"], "message 1: must be a dict"),
    ([{"role": "user", "content": "ok"}, {"role": "bot", "content": "x"}], "message 1: role 'bot'"),
    ([{"role": "user"}], "message 0 \\(user\\): content must be"),
    ([{"role": "user", "content": 5}], "message 0 \\(user\\): content must be"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
     "message 0: content part 0.*'image_url'"),
    ([{"role": "user", "content": ["plain"]}], "message 0: content part 0"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], "message 1 \\(tool\\): no tool name"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}], "message 0: each tool call"),
], ids=["not_list", "empty", "not_dict", "bad_role", "no_content", "int_content", "image_part", "str_part",
        "tool_no_name", "call_no_name"])
def test_bad_messages_name_the_message(messages, match):
    with pytest.raises(ValueError, match=match):
        render(messages)


def test_bad_tools_are_named():
    user = [{"role": "user", "content": "q"}]
    with pytest.raises(ValueError, match="tools must be a list"):
        render(user, tools={"name": "x"})
    with pytest.raises(ValueError, match="tool 1: must be a dict"):
        render(user, tools=[WEATHER, "get_time"])


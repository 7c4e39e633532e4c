"""Tool calling and structured output through `python app.py` and the real `openai` client: the OpenAI guide's
weather example end to end (the reply forced through the engine, since the tiny model has random weights),
streamed and not; tool_choice required / named with the random model still gives schema-valid calls (grammar);
json_schema answers validate over several seeds; bad tool requests are 400s in OpenAI's error shape."""
import json

import jsonschema
import openai
import pytest

from engine.text.tokenizer import load_tokenizer
from tests.app_server import running_app

MODEL = "m1-tiny"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}
SMALL_TOOL = {"type": "function", "function": {"name": "set_unit", "parameters": {
    "type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}, "loud": {"type": "boolean"}},
    "required": ["unit", "loud"], "additionalProperties": False}}}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 5}}, "required": ["city"],
    "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What's the weather like in Boston today?"}]
ARGS = {"location": "Boston, MA", "unit": "fahrenheit"}
CALL_REPLY = ("<think>\nThe user wants the weather; call the tool.\n</think>\n<tool_calls>\n"
              + json.dumps({"name": "get_current_weather", "arguments": ARGS}) + "\n</tool_calls><end_of_sentence>")
ANSWER_REPLY = "<think>\nThe tool answered.\n</think>\nIt is 72°F and sunny in Boston.<end_of_sentence>"


@pytest.fixture(scope="module")
def client(tiny_official, tmp_path_factory):
    with running_app(["--model", str(tiny_official), "--served-model-name", MODEL, "--max-model-len", "4096",
                      "--device", "cpu"], tmp_path_factory.mktemp("data")) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)


def test_weather_example_end_to_end(client, tiny_official):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER_TOOL], max_tokens=200,
                                           extra_body={"force_output": CALL_REPLY})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.reasoning_content == "The user wants the weather; call the tool."
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_current_weather" and json.loads(call.function.arguments) == ARGS

    history = ASK + [choice.message.model_dump(exclude_none=True, exclude={"reasoning_content"}),
                     {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 72, "sky": "sunny"}'}]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL], max_tokens=200,
                                            extra_body={"force_output": ANSWER_REPLY})
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "It is 72°F and sunny in Boston."
    tokenizer = load_tokenizer(tiny_official)  # the history is rendered as M1's template does: same token count
    assert second.usage.prompt_tokens == len(tokenizer.encode_chat(history, tools=[WEATHER_TOOL]))


def test_weather_example_streamed(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER_TOOL], stream=True,
                                                 max_tokens=200, extra_body={"force_output": CALL_REPLY}))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first, rest = deltas[0][0], [d[0] for d in deltas[1:]]
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_current_weather"
    assert len(rest) >= 2 and all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    assert json.loads(first.function.arguments + "".join(d.function.arguments for d in rest)) == ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "set_unit"}}])
def test_forced_call_from_the_random_model_matches_the_schema(client, choice):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=[CLOCK_TOOL, SMALL_TOOL], seed=3,
                                           tool_choice=choice, max_tokens=120, extra_body={"thinking_budget": 2})
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and calls, reply
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (CLOCK_TOOL, SMALL_TOOL)}
    for call in calls:
        assert isinstance(choice, str) or call.function.name == "set_unit"
        jsonschema.validate(json.loads(call.function.arguments), tools[call.function.name])


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                            "maximum": 9}},
          "required": ["ok", "n"], "additionalProperties": False}


@pytest.mark.parametrize("seed", range(4))
def test_json_schema_answers_validate(client, seed):
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, seed=seed, max_tokens=60, extra_body={"thinking_budget": 2},
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}})
    assert reply.choices[0].finish_reason == "stop", reply
    jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)


def call_message(name, arguments):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}


@pytest.mark.parametrize("kw, param, words", [
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice", "not in tools"),
    ({"tools": [WEATHER_TOOL], "messages": ASK + [call_message("nope", "{}")]},
     "messages[1].tool_calls[0]", "unknown tool"),
    ({"tools": [WEATHER_TOOL], "messages": ASK + [call_message("get_current_weather", '{"unit": "kelvin"}')]},
     "messages[1].tool_calls[0]", "do not match"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/definitions/none"}}}],
      "tool_choice": "required"}, "tools", "cannot be built"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "tools[0].function.parameters", "not a valid JSON schema"),
    ({"tool_choice": "required"}, "tool_choice", "at least one tool"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0]", "name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"$ref": "#/x"}}}},
     "response_format", "cannot be built"),
], ids=["choice_not_in_tools", "unknown_tool", "arguments_fail_schema", "uncompilable", "invalid_schema",
        "required_without_tools", "bad_name", "uncompilable_response_format"])
def test_bad_tool_requests_are_400(client, kw, param, words):
    kw = {"messages": ASK, **kw}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, max_tokens=4, **kw)
    error = info.value.response.json()["error"]
    assert info.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"], error

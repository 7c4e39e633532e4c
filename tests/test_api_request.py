"""`parse_request` on its own (no server): every body field's accepted values and boundaries, the OpenAI error
shape of a refusal (status, param, code, a message naming the field), the context window's edge, and the
SamplingParams that come out. The real tiny tokenizer encodes the messages."""
import json
import math

import pytest

from engine.serving.sampling import SEED_RANGE
from engine.text.tokenizer import load_tokenizer
from studio.api_request import APIError, parse_request
from studio.api_schema import ChatCompletionBody
from studio.generation import THINK_START

MODEL = "m1-tiny"
WINDOW = 4096
HELLO = [{"role": "user", "content": "Hello there!"}]
TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}


@pytest.fixture(scope="module")
def tokenizer(tiny_official):
    return load_tokenizer(tiny_official)


def parse(tokenizer, window=WINDOW, **fields):
    return parse_request({"messages": HELLO, **fields}, model_names=[MODEL], tokenizer=tokenizer, window=window)


def refusal(tokenizer, body, window=WINDOW) -> APIError:
    with pytest.raises(APIError) as info:
        parse_request(body, model_names=[MODEL], tokenizer=tokenizer, window=window)
    return info.value


def test_defaults_of_a_bare_body(tokenizer):
    req = parse(tokenizer)
    p = req.params
    assert req.prompt_ids == tokenizer.encode_chat(HELLO) and req.keep_at == []
    assert (p.temperature, p.top_p, p.top_k, p.seed, p.stop, p.ignore_eos) == (1.0, 1.0, 0, None, [], False)
    assert p.max_tokens == WINDOW - len(req.prompt_ids)  # the rest of the window
    assert (req.stream, req.include_usage, req.force_think_start, req.thinking_budget, req.session_id) == \
        (False, False, False, None, None)
    assert req.tools is None and req.forced_output == []


@pytest.mark.parametrize("fields, attribute, value", [
    ({"temperature": 0}, "temperature", 0.0), ({"temperature": 2}, "temperature", 2.0),
    ({"temperature": 0.7}, "temperature", 0.7), ({"temperature": None}, "temperature", 1.0),
    ({"top_p": 1}, "top_p", 1.0), ({"top_p": 1e-9}, "top_p", 1e-9), ({"top_p": None}, "top_p", 1.0),
    ({"seed": SEED_RANGE[0]}, "seed", SEED_RANGE[0]), ({"seed": SEED_RANGE[1]}, "seed", SEED_RANGE[1]),
    ({"seed": 0}, "seed", 0), ({"seed": None}, "seed", None),
    ({"stop": "x"}, "stop", ["x"]), ({"stop": ["a", "b", "c", "d"]}, "stop", ["a", "b", "c", "d"]),
    ({"stop": []}, "stop", []), ({"stop": None}, "stop", []),
    ({"max_tokens": 1}, "max_tokens", 1), ({"max_tokens": 7}, "max_tokens", 7),
    ({"max_completion_tokens": 9}, "max_tokens", 9), ({"max_completion_tokens": 9, "max_tokens": 3}, "max_tokens", 9),
    ({"max_completion_tokens": None, "max_tokens": 3}, "max_tokens", 3),
    ({"ignore_eos": True}, "ignore_eos", True), ({"ignore_eos": False}, "ignore_eos", False),
    ({"ignore_eos": None}, "ignore_eos", False),
], ids=str)
def test_sampling_fields_reach_the_params(tokenizer, fields, attribute, value):
    assert getattr(parse(tokenizer, **fields).params, attribute) == value


@pytest.mark.parametrize("fields, attribute, value", [
    ({"stream": True}, "stream", True), ({"stream": False}, "stream", False), ({"stream": None}, "stream", False),
    ({"stream_options": {"include_usage": True}}, "include_usage", True),
    ({"stream_options": {"include_usage": False}}, "include_usage", False),
    ({"stream_options": {}}, "include_usage", False), ({"stream_options": None}, "include_usage", False),
    ({"thinking_budget": 0}, "thinking_budget", 0), ({"thinking_budget": 5}, "thinking_budget", 5),
    ({"user": "alice"}, "session_id", "alice"), ({"user": ""}, "session_id", None),
    ({"force_think_start": False}, "force_think_start", False), ({"force_think_start": None}, "force_think_start", False),
    ({"n": 1}, "stream", False), ({"model": MODEL}, "stream", False), ({"model": None}, "stream", False),
    ({"logprobs": False, "frequency_penalty": 0, "metadata": {"a": "b"}}, "stream", False),  # ignored extras
], ids=str)
def test_request_fields(tokenizer, fields, attribute, value):
    assert getattr(parse(tokenizer, **fields), attribute) == value


def test_force_think_start_appends_the_think_tag_and_keeps_the_state_before_it(tokenizer):
    req = parse(tokenizer, force_think_start=True, max_tokens=4)
    plain = tokenizer.encode_chat(HELLO)
    assert req.force_think_start and req.keep_at == [len(plain)]
    assert req.prompt_ids == plain + tokenizer.encode(THINK_START)


@pytest.mark.parametrize("messages", [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    [{"role": "user", "content": "What time is it?"}, CALL, {"role": "tool", "tool_call_id": "call_1", "content": "9"}],
    [{"role": "user", "content": "x", "name": "bob"}, {"role": "assistant", "content": "y", "refusal": None}],
], ids=["parts", "tool_call_and_result", "extra_keys"])
def test_messages_are_encoded_as_sent(tokenizer, messages):
    req = parse(tokenizer, messages=messages, tools=[TOOL])
    assert req.prompt_ids == tokenizer.encode_chat(messages, tools=[TOOL])
    assert parse(tokenizer, messages=messages, tools=[]).prompt_ids == tokenizer.encode_chat(messages)


BAD = [  # (fields, param, words in the message)
    ({"temperature": -0.01}, "temperature", "greater than or equal to 0"),
    ({"temperature": 2.01}, "temperature", "less than or equal to 2"),
    ({"temperature": "1"}, "temperature", "valid number"), ({"temperature": True}, "temperature", "valid number"),
    ({"temperature": math.nan}, "temperature", "finite"), ({"temperature": math.inf}, "temperature", "finite"),
    ({"top_p": 0}, "top_p", "greater than 0"), ({"top_p": 1.01}, "top_p", "less than or equal to 1"),
    ({"top_p": -math.inf}, "top_p", "finite"),
    ({"seed": SEED_RANGE[0] - 1}, "seed", "greater than or equal"), ({"seed": SEED_RANGE[1] + 1}, "seed", "less than"),
    ({"seed": 1.5}, "seed", "valid integer"), ({"seed": True}, "seed", "valid integer"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"), ({"stop": 5}, "stop", "valid list"),
    ({"stop": ["a", 1]}, "stop[1]", "valid string"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"), ({"max_tokens": 1.5}, "max_tokens", "integer"),
    ({"max_tokens": "8"}, "max_tokens", "integer"), ({"max_completion_tokens": 0}, "max_completion_tokens", ">= 1"),
    ({"n": 2}, "n", "Input should be 1"), ({"n": 0}, "n", "Input should be 1"),
    ({"stream": "yes"}, "stream", "valid boolean"), ({"stream_options": "x"}, "stream_options", "dictionary"),
    ({"stream_options": {"include_usage": 1}}, "stream_options", "stream_options.include_usage"),
    ({"user": 5}, "user", "valid string"), ({"thinking_budget": -1}, "thinking_budget", "greater than or equal to 0"),
    ({"thinking_budget": 2.5}, "thinking_budget", "integer"), ({"force_think_start": 1}, "force_think_start", "boolean"),
    ({"ignore_eos": "true"}, "ignore_eos", "valid boolean"), ({"force_output": ""}, "force_output", "at least 1"),
    ({"messages": []}, "messages", "at least 1 item"), ({"messages": "hi"}, "messages", "valid list"),
    ({"messages": None}, "messages", "valid list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0]", "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0]", "messages[0].content: Input should be a valid str"),
    ({"messages": [{"role": "user"}]}, "messages[0]", "content is required"),
    ({"messages": HELLO + [{"role": "assistant", "content": None, "tool_calls": []}]}, "messages[1]", "content is req"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0]",
     "messages[0].content[0].type: Input should be 'text'"),
    ({"messages": [HELLO[0], "hi"]}, "messages[1]", "valid dictionary"),
    ({"tools": {"type": "function"}}, "tools", "valid list"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0]", "tools[0].function.name"),
    ({"tools": [TOOL, TOOL]}, "tools", "function names must be unique"),
    ({"tool_choice": "x"}, "tool_choice", "'none', 'auto' or 'required'"),
    ({"tool_choice": {"type": "function"}}, "tool_choice", "tool_choice.function: Field required;"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "valid boolean"),
    ({"response_format": {"type": "xml"}}, "response_format", "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "needs a json_schema object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}, "response_format",
     "response_format.json_schema.name"),
]


@pytest.mark.parametrize("fields, param, words", BAD, ids=[str(b[0])[:60] for b in BAD])
def test_bad_fields_are_400s_naming_the_field(tokenizer, fields, param, words):
    error = refusal(tokenizer, {"messages": HELLO, **fields})
    assert (error.status, error.param, error.code, error.type) == (400, param, None, "invalid_request_error")
    assert error.message.startswith(param.partition("[")[0]) and words in error.message, error.message
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error", "param": param,
                                      "code": None}}


def test_the_message_says_what_came_and_what_the_field_must_be(tokenizer):
    assert refusal(tokenizer, {"messages": HELLO, "temperature": 3}).message == \
        "temperature: Input should be less than or equal to 2 (got 3); temperature must be a number from 0 to 2"
    missing = refusal(tokenizer, {"model": MODEL})
    assert missing.param == "messages" and missing.message == \
        "messages: Field required; messages must be a non-empty list of {role, content} objects"
    long = refusal(tokenizer, {"messages": "x" * 10_000}).message
    assert len(long) < 200 and "..." in long  # the input is shown shortened


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_a_body_that_is_not_an_object(tokenizer, body):
    error = refusal(tokenizer, body)
    assert (error.status, error.param, error.code) == (400, None, None)
    assert error.message == "the request body must be a JSON object"


@pytest.mark.parametrize("model", ["gpt-4o", "", 5, ["m1-tiny"]])
def test_an_unknown_model_is_a_404_before_any_field_is_checked(tokenizer, model):
    error = refusal(tokenizer, {"model": model, "messages": [], "temperature": 9})
    assert (error.status, error.param, error.code) == (404, "model", "model_not_found")
    assert error.message == f"The model `{model}` does not exist; this server serves {MODEL}"


def test_every_served_name_is_accepted_and_named_in_the_404(tokenizer):
    names = [MODEL, "m1-alias"]
    for model in names:
        assert parse_request({"model": model, "messages": HELLO}, model_names=names, tokenizer=tokenizer,
                             window=WINDOW).params.max_tokens > 0
    with pytest.raises(APIError) as info:
        parse_request({"model": "gpt-4o", "messages": HELLO}, model_names=names, tokenizer=tokenizer, window=WINDOW)
    assert info.value.message.endswith("this server serves m1-tiny, m1-alias")


def test_the_tokenizer_refusing_the_messages_is_a_400_on_messages(tokenizer):
    orphan = [{"role": "user", "content": "x"}, {"role": "tool", "content": "9"}]  # a tool result with no name
    error = refusal(tokenizer, {"messages": orphan})
    assert (error.status, error.param, error.code) == (400, "messages", None)
    assert error.message.startswith("invalid messages: message 1 (tool): no tool name"), error.message


@pytest.mark.parametrize("force_think", [False, True])
def test_the_window_edge(tokenizer, force_think):
    prompt = len(parse(tokenizer, force_think_start=force_think).prompt_ids)
    fits = parse(tokenizer, window=prompt + 5, max_tokens=5, force_think_start=force_think)
    assert fits.params.max_tokens == 5
    assert parse(tokenizer, window=prompt + 1, force_think_start=force_think).params.max_tokens == 1
    over = refusal(tokenizer, {"messages": HELLO, "max_tokens": 6, "force_think_start": force_think},
                   window=prompt + 5)
    assert (over.status, over.param, over.code) == (400, "messages", "context_length_exceeded")
    assert over.message == (f"This model's maximum context length is {prompt + 5:,} tokens. However, you requested "
                            f"{prompt + 6:,} tokens ({prompt:,} in the messages, 6 in the completion): over by 1 "
                            "tokens. Please reduce the length of the messages or the completion.")
    full = refusal(tokenizer, {"messages": HELLO, "force_think_start": force_think}, window=prompt)
    assert full.code == "context_length_exceeded" and full.message == (
        f"This model's maximum context length is {prompt:,} tokens. However, you requested {prompt + 1:,} tokens "
        f"({prompt:,} in the messages): over by 1 tokens. Please reduce the length of the messages or the completion.")


def test_the_completion_limit_counts_max_completion_tokens_first(tokenizer):
    prompt = len(parse(tokenizer).prompt_ids)
    body = {"messages": HELLO, "max_completion_tokens": 10, "max_tokens": 1}
    assert refusal(tokenizer, body, window=prompt + 9).message.count("10 in the completion") == 1
    thousands = refusal(tokenizer, {"messages": HELLO, "max_tokens": 5000}, window=WINDOW).message
    assert f"{prompt + 5000:,} tokens ({prompt:,} in the messages, 5,000 in the completion)" in thousands


def test_every_body_field_has_the_hint_an_error_ends_with():
    missing = [name for name, f in ChatCompletionBody.model_fields.items() if not f.description]
    assert not missing and ChatCompletionBody.model_config["extra"] == "allow"


def test_an_api_error_is_openai_json_with_its_status():
    error = APIError(404, "no such model", param="model", code="model_not_found")
    response = error.response()
    assert str(error) == "no such model" and response.status_code == 404
    assert json.loads(response.body) == {"error": {"message": "no such model", "type": "invalid_request_error",
                                                   "param": "model", "code": "model_not_found"}}
    assert "www-authenticate" not in response.headers
    unauthorized = APIError(401, "Incorrect API key provided", code="invalid_api_key").response()
    assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"] == "Bearer"
    assert json.loads(unauthorized.body)["error"]["param"] is None

"""Constrained decoding on the real tiny engine: xgrammar's mask equals the bit-by-bit reference, a random model
under a JSON-schema or tool-call grammar still writes schema-valid output, forced tokens (the think block's close,
a forced reply ending in EOS) go through the same path."""
import json

import jsonschema
import pytest
import torch

from engine import SamplingParams
from engine.serving.grammar import GrammarError, Grammars, apply_constraints, apply_mask_reference
from engine.text import output_format
from engine.text.tool_calls import parse

SCHEMA = {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer",
          "minimum": 1, "maximum": 7}, "ok": {"type": "boolean"}}, "required": ["unit", "days", "ok"],
          "additionalProperties": False}
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "location": {"type": "string", "maxLength": 6}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["location", "unit"], "additionalProperties": False}}
CLOCK = {"name": "get_time", "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}},
                                            "required": ["utc"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def tiny_llm(tiny_official):  # a short window: a small cache keeps CPU steps fast
    from engine import LLM
    return LLM(str(tiny_official), device="cpu", dtype="float32", max_model_len=2048)


@pytest.fixture(scope="module")
def grammars(tiny_llm):
    return Grammars(tiny_llm.tokenizer, tiny_llm.engine.config.vocab_size)


def prompt(tiny_llm):
    return tiny_llm.tokenizer.encode_chat([{"role": "user", "content": "weather?"}])


def test_mask_equals_the_reference(grammars, tiny_llm):
    tag = output_format.structural_tag(output_format.json_format(SCHEMA))
    constraints = [grammars.constraint(tag), None, grammars.constraint(tag)]
    for token in tiny_llm.tokenizer.encode('<think>\nok\n</think>\n{"unit": "'):
        constraints[2].accept(token)
    logits = torch.randn(3, grammars.vocab_size, generator=torch.Generator().manual_seed(0))
    fast, slow = logits.clone(), logits.clone()
    apply_constraints(fast, constraints)
    import xgrammar as xgr
    bitmask = xgr.allocate_token_bitmask(3, grammars.vocab_size)
    constraints[0].fill(bitmask, 0)
    constraints[2].fill(bitmask, 2)
    apply_mask_reference(slow, bitmask, [0, 2])
    assert torch.equal(fast, slow)
    assert torch.equal(fast[1], logits[1]) and torch.isinf(fast[2]).sum() > grammars.vocab_size // 2
    allowed = {tiny_llm.tokenizer.decode([t]) for t in torch.nonzero(~torch.isinf(fast[2])).flatten().tolist()}
    assert allowed and all("celsius".startswith(a) or "fahrenheit".startswith(a) for a in allowed), allowed


@pytest.mark.parametrize("seed", range(2))  # the API tests add more seeds (tests/test_api_tools.py)
def test_random_model_writes_schema_valid_json(grammars, tiny_llm, seed):
    tag = {"type": "structural_tag", "format": output_format.json_format(SCHEMA)}
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=60, seed=seed, constraint=grammars.constraint(tag))
    out = tiny_llm.generate(prompt_token_ids=prompt(tiny_llm), sampling_params=params)[0].outputs[0]
    assert out.finish_reason == "stop", out.text
    jsonschema.validate(json.loads(out.text), SCHEMA)
    assert params.constraint.completed and not params.constraint.failed


@pytest.mark.parametrize("seed", [0])
def test_random_model_under_the_tool_grammar_calls_a_tool(grammars, tiny_llm, seed):
    tools = output_format.tool_calls_format([WEATHER, CLOCK], parallel=seed % 2 == 0)
    tag = output_format.structural_tag(tools, starts_in_reasoning=True)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=120, seed=seed, constraint=grammars.constraint(tag))
    ids = tiny_llm.tokenizer.encode("<think>\n")  # the prompt opened the think block; the engine closes it at 3
    tiny_llm.engine.add_request(prompt(tiny_llm) + ids, params, f"tools{seed}", starts_in_reasoning=True,
                                thinking_budget=3)
    text, update = "", None
    while update is None or not update.finished:
        for update in tiny_llm.engine.step():
            text += update.text
    assert update.finish_reason == "stop", text
    reasoning, content, calls = parse(text, starts_in_reasoning=True, tool_names=["get_weather", "get_time"])
    assert calls and content == "", text
    for call in calls:
        schema = (WEATHER if call.name == "get_weather" else CLOCK)["parameters"]
        jsonschema.validate(json.loads(call.arguments), schema)


def test_forced_output_ending_in_eos_is_the_whole_reply(tiny_llm):
    tok = tiny_llm.tokenizer
    reply = '<think>\nok\n</think>\n<tool_calls>\n{"name": "get_time", "arguments": {"utc": true}}\n</tool_calls>'
    forced = tok.encode(reply) + [min(tok.eos_token_ids)]
    tiny_llm.engine.add_request(prompt(tiny_llm), SamplingParams(max_tokens=200, seed=1), "forced", forced_output=forced)
    text, update = "", None
    while update is None or not update.finished:
        for update in tiny_llm.engine.step():
            text += update.text
    assert text == reply and update.finish_reason == "stop"


def test_a_schema_xgrammar_cannot_compile_is_a_grammar_error(grammars):
    with pytest.raises(GrammarError, match="cannot be built"):
        grammars.compile(output_format.structural_tag(output_format.json_format({"$ref": "#/definitions/nope"})))


def test_tools_on_auto_with_a_json_answer_accept_either(grammars):
    from studio.api_tools import parse_tools
    import xgrammar as xgr
    body = {"messages": [], "tools": [{"type": "function", "function": CLOCK}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
    compiled = grammars.compile(parse_tools(body).structure(starts_in_reasoning=False))
    call = '<tool_calls>\n{"name": "get_time", "arguments": {"utc": true}}\n</tool_calls>'
    for text, ok in ((f"<think>\nx\n</think>\n{call}", True), ('{"unit": "celsius", "days": 2, "ok": false}', True),
                     ('{"unit": "kelvin", "days": 2, "ok": false}', False), ("Hello", False)):
        matcher = xgr.GrammarMatcher(compiled)
        assert (matcher.accept_string(text) and matcher.is_completed()) == ok, text

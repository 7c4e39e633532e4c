"""Saved model states survive a restart (issue 16 item 10) and start-up is visible (item 11).

- engine level: an LLM with a disk tier in a directory of ours persists its snapshots at close(); the next LLM of
  the same model and layout restores a follow-up from them; one of another model (or layout) refuses them.
- app level: `app.py --data-dir D` (no --model) writes the tiny model under D, logs one line per request, and after
  a restart with the same D a follow-up through the OpenAI API reports cached tokens.

    .venv/bin/python -m pytest -q tests/test_state_restart.py
"""
import json

import openai

from engine import LLM, SamplingParams
from engine.serving import disk_states
from tests.app_server import running_app

GIB = 1 << 30
PROMPT = list(range(100, 180))
FOLLOW_UP = PROMPT + list(range(300, 340))


def _llm(model, states_dir):
    return LLM(str(model), device="cpu", dtype="float32", disk_state_bytes=GIB, disk_state_dir=str(states_dir))


def _cached(llm, tokens) -> int:
    out = llm.generate(prompt_token_ids=tokens, sampling_params=SamplingParams(temperature=0.0, max_tokens=2))
    return out[0].metrics["cached_tokens"]


def test_disk_states_persist_across_engines_and_refuse_another_model(tiny_official, tiny_hf, tmp_path):
    states = tmp_path / "states"
    first = _llm(tiny_official, states)
    assert first.engine.states_restored == 0 and _cached(first, PROMPT) == 0
    first.close()  # persists: everything kept moves to disk, the index names the model and layout
    index = json.loads((states / disk_states.INDEX_NAME).read_text())
    assert index["entries"] and index["identity"]["tensor_parallel_size"] == 1

    second = _llm(tiny_official, states)
    assert second.engine.states_restored == len(index["entries"]) and second.engine.states_refused is None
    assert _cached(second, FOLLOW_UP) >= len(PROMPT) - 16  # restored from the earlier run's snapshot
    second.close()

    other = _llm(tiny_hf, states)  # another checkpoint (its config differs): the saved states are refused
    assert other.engine.states_restored == 0 and "config_sha256" in other.engine.states_refused
    assert not list(states.glob("snap-*.pt"))  # and removed, never restored
    assert _cached(other, FOLLOW_UP) == 0
    other.close()


def test_restart_keeps_follow_ups_cheap_and_startup_is_visible(tmp_path):
    hello = [{"role": "user", "content": "Hello, tell me about lightning attention."}]
    with running_app(["--served-model-name", "m1-tiny"], tmp_path) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none")
        first = client.chat.completions.create(model="m1-tiny", messages=hello, max_tokens=8, seed=4)
    log = (tmp_path / "server.log").read_text()
    assert (tmp_path / "models" / "m1-tiny" / "config.json").is_file()  # the tiny model went under --data-dir
    assert f"writing the tiny random-weights demo model to {tmp_path.resolve() / 'models' / 'm1-tiny'}" in log
    assert '"GET /health HTTP/1.1" 200' in log and '"POST /v1/chat/completions HTTP/1.1" 200' in log
    assert (tmp_path / "states" / disk_states.INDEX_NAME).is_file()

    follow = hello + [{"role": "assistant", "content": first.choices[0].message.content},
                      {"role": "user", "content": "Tell me more."}]
    with running_app(["--served-model-name", "m1-tiny"], tmp_path) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none")
        second = client.chat.completions.create(model="m1-tiny", messages=follow, max_tokens=8, seed=4)
    assert "saved model states: " in (tmp_path / "server.log").read_text()
    assert second.usage.prompt_tokens_details.cached_tokens > 0

"""Engine replicas on Ray Serve (engine.cluster), on a local Ray cluster this module starts: two CPU replicas of the
tiny model sharing a --state-dir. Sessions stay on their replica (chat service and OpenAI API), outputs equal the
in-process engine's re-read, a session moved to the other replica restores from the shared disk tier, and a killed
replica costs its in-flight stream a clear error while the next turns succeed on the other replica.
If Ray cannot start, the fixtures fail (nothing here is skipped)."""
import asyncio
import json
import shutil
import threading
import time

import openai
import pytest
import torch

from app_server import free_port
from engine.cluster.launch import start_replicas
from engine.cluster.router import rank_replicas
from engine.runtime.cache import HostSnap
from engine.serving.async_engine import AsyncEngine
from engine.serving.llm_engine import EngineArgs, LLMEngine
from engine.serving.sampling import SamplingParams
from engine.serving.shared_states import SharedStates
from engine.serving.state_cache import TokenChain
from studio.api import OpenAIService
from studio.api_request import parse_request
from studio.chat import ChatService, ChatSettings
from studio.server import ServerConfig, build_app
from studio.store.store import SessionStore
from studio.ui.views import replicas_html

pytestmark = pytest.mark.timeout(900)
WINDOW = 2048
SYSTEM = "You are a helpful assistant. Answer briefly and precisely. " * 10  # ~230 tokens: history dominates
ENGINE = {"device": "cpu", "dtype": "float32"}
QUESTIONS = ["Hello there, who are you?", "And what can you do?", "Thanks, bye!"]


def settings(seed: int, **kw) -> ChatSettings:
    return ChatSettings(**{"system_prompt": SYSTEM, "temperature": 1.0, "seed": seed, "max_tokens": 8, **kw})


class EndlessSettings(ChatSettings):
    """A reply that never ends by itself (EOS ignored): an in-flight stream for the kill test."""

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=1.0, max_tokens=self.max_tokens, seed=self.seed, ignore_eos=True)


@pytest.fixture(scope="module")
def one_thread():
    """Replicas run one torch thread each; so does the reference engine, for bit-equal outputs (and speed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_states")


@pytest.fixture(scope="module")
def replicas(tiny_official, state_dir, one_thread):
    engine = start_replicas(str(tiny_official), replicas=2, cpus_per_replica=0.5, torch_threads=1, engine=ENGINE,
                            engine_args={"max_model_len": WINDOW, "shared_state_dir": str(state_dir)},
                            app_name="m1-test")
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_official, one_thread):
    """The in-process engine re-reading every prompt (no state reuse): what any replica must produce."""
    engine = AsyncEngine(LLMEngine(str(tiny_official), **ENGINE,
                                   args=EngineArgs(max_model_len=WINDOW, enable_state_reuse=False)))
    yield engine
    engine.shutdown()


def events_of(agen):
    async def main():
        return [event async for event in agen]
    return main()


async def send_all(chat, turns):
    """One turn of several sessions at once: [(uid, sid, text, settings)] -> their final events."""
    runs = await asyncio.gather(*(events_of(chat.send(uid, sid, text, settings=s)) for uid, sid, text, s in turns))
    return [events[-1] for events in runs]


@pytest.fixture(scope="module")
def chats(replicas, reference, tmp_path_factory):
    """Six sessions x three turns on the replicas, and the same turns (same seeds) on the reference engine."""
    root = tmp_path_factory.mktemp("chat")
    served, ref = ChatService(replicas, SessionStore(root / "r.db")), ChatService(reference, SessionStore(root / "i.db"))
    sessions = []
    for i in range(6):
        uid = served.store.ensure_user(f"u{i}")
        assert ref.store.ensure_user(f"u{i}") == uid
        sid = served.store.create_session(uid)["id"]
        ref_sid = ref.store.create_session(uid)["id"]
        sessions.append((uid, sid, ref_sid))
    finals = []
    for turn, question in enumerate(QUESTIONS):
        asks = [(uid, sid, f"{question} (session {i})", settings(10 * i + turn)) for i, (uid, sid, _) in enumerate(sessions)]
        finals.append(asyncio.run(send_all(served, asks)))
        ref_asks = [(uid, ref_sid, text, s) for (uid, _, ref_sid), (_, _, text, s) in zip(sessions, asks)]
        asyncio.run(send_all(ref, ref_asks))
    yield served, ref, sessions, finals
    served.store.close()
    ref.store.close()


def transcript(store, uid, sid) -> list[tuple]:
    return [(m["role"], m["content"], m["reasoning"], m["status"]) for m in store.all_messages(uid, sid)]


def test_chat_turns_stay_on_their_replica_reuse_state_and_match_the_in_process_engine(chats):
    served, ref, sessions, finals = chats
    for i, (uid, sid, ref_sid) in enumerate(sessions):
        stats = [finals[turn][i].stats for turn in range(3)]
        assert all(s["status"] in ("done", "length") for s in stats), stats
        assert len({s["replica"] for s in stats}) == 1, f"session {i} moved: {[s['replica'] for s in stats]}"
        for s in stats[1:]:
            assert s["cached_tokens"] >= 0.8 * s["prompt_tokens"], s
        assert transcript(served.store, uid, sid) == transcript(ref.store, uid, ref_sid)


def test_rendezvous_hashing_moves_few_sessions_when_a_replica_comes_or_goes():
    sessions = [f"s{i}" for i in range(600)]
    three = {s: rank_replicas(s, ["a", "b", "c"])[0] for s in sessions}
    four = {s: rank_replicas(s, ["a", "b", "c", "d"])[0] for s in sessions}
    moved = [s for s in sessions if three[s] != four[s]]
    assert all(four[s] == "d" for s in moved) and 0.15 < len(moved) / len(sessions) < 0.35
    two = {s: rank_replicas(s, ["a", "c"])[0] for s in sessions}  # "b" lost: only its sessions move
    assert all(two[s] == three[s] for s in sessions if three[s] != "b")
    assert {three[s] for s in sessions} == {"a", "b", "c"}


@pytest.fixture(scope="module")
def api(replicas, tiny_official, tmp_path_factory):
    """The studio's app on the replicas, served by uvicorn on loopback."""
    import uvicorn
    data = tmp_path_factory.mktemp("api")
    store = SessionStore(data / "sessions.db")
    app = build_app(replicas, store, ServerConfig(str(tiny_official), "m1-tiny", str(data)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def reference_answer(reference, body: dict) -> dict:
    service = OpenAIService(reference, "m1-tiny")
    req = parse_request(body, model_names=["m1-tiny"], tokenizer=service.encoder, window=WINDOW)
    return asyncio.run(service.complete(req))


def api_turn(client, messages, seed, **session):
    stream = client.chat.completions.create(model="m1-tiny", messages=messages, seed=seed, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True}, **session)
    text, fingerprint, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        fingerprint = chunk.system_fingerprint or fingerprint
        usage = chunk.usage or usage
    return text, fingerprint, usage


def test_api_sessions_by_user_field_or_header_stay_on_their_replica(api, replicas, reference):
    import httpx
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="none")
    for i in range(6):
        session = {"user": f"api-{i}"} if i % 2 else {"extra_headers": {"X-Session-Id": f"api-{i}"}}
        messages, fingerprints = [{"role": "system", "content": SYSTEM}], []
        for turn, question in enumerate(QUESTIONS):
            messages.append({"role": "user", "content": f"{question} (api {i})"})
            text, fingerprint, usage = api_turn(client, messages, 100 * i + turn, **session)
            expected = reference_answer(reference, {"messages": messages, "seed": 100 * i + turn, "max_tokens": 8})
            assert text == expected["choices"][0]["message"]["content"]
            fingerprints.append(fingerprint)
            if turn:
                assert usage.prompt_tokens_details.cached_tokens >= 0.8 * usage.prompt_tokens, usage
            messages.append({"role": "assistant", "content": text})
        assert len(set(fingerprints)) == 1 and fingerprints[0].startswith("replica-"), fingerprints
    health = httpx.get(f"{api}/health", timeout=30).json()
    assert health["replicas"]["alive"] == 2, health
    assert sum(r["sessions"] for r in health["replicas"]["per_replica"]) >= 12, health
    banner = replicas_html(health["replicas"]["per_replica"])  # the studio's banner, from the same statuses
    assert "2 of 2 engine replicas alive" in banner and all(r["replica"] in banner for r in health["replicas"]["per_replica"])


def test_a_session_moved_to_the_other_replica_restores_its_state_from_the_shared_state_dir(api, replicas, reference):
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="none")
    messages = [{"role": "system", "content": SYSTEM}]
    for turn, question in enumerate(QUESTIONS[:2]):
        messages.append({"role": "user", "content": f"{question} (moving)"})
        text, home, _ = api_turn(client, messages, turn, user="moving")
        messages.append({"role": "assistant", "content": text})
    live = replicas.live_replicas()
    other = next(r for r in live if f"replica-{r}" != home)
    moved_id = next(f"moved-{k}" for k in range(1000) if rank_replicas(f"moved-{k}", live)[0] == other)
    messages.append({"role": "user", "content": "One more thing (moving)"})
    text, fingerprint, usage = api_turn(client, messages, 7, user=moved_id)
    assert fingerprint == f"replica-{other}"
    assert usage.prompt_tokens_details.cached_tokens >= 0.8 * usage.prompt_tokens, usage
    assert text == reference_answer(reference, {"messages": messages, "seed": 7, "max_tokens": 8})["choices"][0][
        "message"]["content"]
    status = {s["replica"]: s for s in replicas.replicas()}
    assert status[other]["shared_states"]["restored"] >= 1 and status[other]["shared_states"]["refused"] == 0


def test_leaving_a_stream_aborts_its_request_on_the_replica(replicas):
    async def leave_after_two_tokens():
        tokens, stream = 0, replicas.stream(list(range(10, 80)), SamplingParams(max_tokens=1500, ignore_eos=True),
                                            session_id="leaving")
        async for update in stream:
            tokens += len(update.token_ids)
            if tokens >= 2:
                break
        await stream.aclose()
    asyncio.run(leave_after_two_tokens())
    deadline = time.time() + 30
    while any(s["running"] for s in replicas.replicas()):
        assert time.time() < deadline, replicas.replicas()
        time.sleep(0.2)
    assert not replicas.running


def test_snapshots_of_another_model_or_tp_layout_are_refused(tmp_path):
    tokens = list(range(3, 300))
    chain = TokenChain(256).extend_to(tokens)
    writer = SharedStates(tmp_path, {"model": "a", "tensor_parallel_size": 1}, 256)
    snap = HostSnap({0: torch.ones(2)}, {3: torch.zeros(1)}, {3: torch.zeros(1)})
    writer.save(*chain.prefix(200), snap)
    same = SharedStates(tmp_path, {"model": "a", "tensor_parallel_size": 1}, 256)
    hit = same.lookup(chain, len(tokens) - 1)
    assert hit.num_tokens == 200 and torch.equal(same.load(hit).states[0], torch.ones(2))
    for identity in ({"model": "b", "tensor_parallel_size": 1}, {"model": "a", "tensor_parallel_size": 2}):
        other = SharedStates(tmp_path, identity, 256)
        assert other.lookup(chain, len(tokens) - 1) is None and other.refused == 1
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["num_tokens"] == 200


def test_a_killed_replica_ends_its_stream_with_an_error_and_its_sessions_continue_elsewhere(chats, replicas, reference,
                                                                                            state_dir):
    import ray
    served, ref, sessions, finals = chats
    for path in state_dir.iterdir():  # no shared states: moved sessions re-read their history
        path.unlink() if path.is_file() else shutil.rmtree(path)
    victim = finals[-1][0].stats["replica"]
    affected = [i for i in range(6) if finals[-1][i].stats["replica"] == victim]
    before = {i: transcript(served.store, uid, sid) for i, (uid, sid, _) in enumerate(sessions)}
    uid = served.store.ensure_user("long")
    live = replicas.live_replicas()
    long_sid = None
    while long_sid is None:  # a session whose replica is the victim
        sid = served.store.create_session(uid)["id"]
        long_sid = sid if rank_replicas(f"{uid}:{sid}", live)[0] == victim else None

    async def in_flight():
        events = []
        async for event in served.send(uid, long_sid, "Tell me everything.", settings=EndlessSettings(seed=1, max_tokens=1500)):
            events.append(event)
            if event.kind in ("reasoning", "answer") and sum(e.kind in ("reasoning", "answer") for e in events) == 3:
                ray.kill(ray.get_actor(f"SERVE_REPLICA::m1-test#EngineReplica#{victim}", namespace="serve"),
                         no_restart=True)
        return events
    events = asyncio.run(asyncio.wait_for(in_flight(), timeout=120))
    assert events[-1].kind == "error" and "was lost" in events[-1].text, events[-1]
    saved = served.store.get_message(uid, events[-1].message_id)
    assert saved["status"] == "error" and saved["reasoning"] + saved["content"]

    asks = [(sessions[i][0], sessions[i][1], f"Still there? (session {i})", settings(77 + i)) for i in affected]
    moved = asyncio.run(send_all(served, asks))
    asyncio.run(send_all(ref, [(sessions[i][0], sessions[i][2], text, s) for i, (_, _, text, s) in zip(affected, asks)]))
    for i, final in zip(affected, moved):
        uid_i, sid_i, ref_sid = sessions[i]
        assert final.kind == "done" and final.stats["replica"] not in (None, victim), final
        assert final.stats["cached_tokens"] < 0.5 * final.stats["prompt_tokens"]  # no state there: a re-read
        after = transcript(served.store, uid_i, sid_i)
        assert after[:len(before[i])] == before[i] and len(after) == len(before[i]) + 2  # nothing lost
        assert after == transcript(ref.store, uid_i, ref_sid)  # the re-read gives the in-process output


def test_tensor_parallel_engines_share_saved_states_rank_by_rank(tiny_official, tiny_llm, tmp_path, one_thread):
    """A TP=2 engine restores from the shared directory (each rank its own shard) what it no longer holds itself;
    a TP=1 engine refuses those files."""
    from engine import LLM
    greedy = SamplingParams(temperature=0.0, max_tokens=6)
    prompt = tiny_llm.engine.tokenizer.encode_chat([{"role": "user", "content": "Tell me a story. " * 12}])
    want = tiny_llm.generate(prompt_token_ids=prompt, sampling_params=greedy)[0].outputs[0].token_ids
    options = dict(device="cpu", dtype="float32", tensor_parallel_size=2, max_model_len=1024,
                   shared_state_dir=str(tmp_path))
    llm = LLM(str(tiny_official), **options)
    try:
        assert llm.generate(prompt_token_ids=prompt, sampling_params=greedy)[0].outputs[0].token_ids == want
        assert list(tmp_path.glob("*.rank0.pt"))
        assert len(list(tmp_path.glob("*.rank1.pt"))) == len(list(tmp_path.glob("*.json")))
        keeper = llm.engine.keeper
        for entry in list(keeper.index.entries.values()):  # as if another replica: nothing in its own tiers
            keeper.index.discard(entry)
        out = llm.generate(prompt_token_ids=prompt, sampling_params=greedy)[0]
        assert out.outputs[0].token_ids == want and out.metrics["cached_tokens"] == len(prompt) - 1
        assert keeper.shared.restored == 1
    finally:
        llm.close()
    tp1 = SharedStates(tmp_path, tiny_llm.engine.identity(), 256)
    assert tp1.lookup(TokenChain(256).extend_to(prompt), len(prompt)) is None and tp1.refused >= 1

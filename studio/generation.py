"""One request on the engine as a stream of `ChatEvent`s: prefill progress, reasoning/answer deltas, final stats.

Shared by the chat service and the OpenAI API. It splits M1's `<think>` block from the answer as it streams,
applies "answer now" (appends the close of the think block as if the model wrote it: `AsyncEngine.force_tokens`;
the thinking budget is passed to the engine, which closes the block at exactly that many tokens) and stops on request (`stop()`, thread-safe) with what was shown so far kept.

    generation = Generation(async_engine, prompt_ids, params, starts_in_reasoning=True, thinking_budget=512)
    async for event in generation.events():     # kinds: prefill, reasoning, answer, then done or error
        ...
Leaving the loop early (closing `events()`) aborts the engine request, like the engine's own stream.
"""
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field

from engine.serving.outputs import RequestUpdate
from engine.text.reasoning import ReasoningSplitter
from engine.serving.sampling import SamplingParams

THINK_START = "<think>\n"
THINK_CLOSE = "\n</think>\n"
STATUS_BY_FINISH = {"stop": "done", "length": "length", "abort": "stopped"}


@dataclass
class ChatEvent:
    """One thing that happened to a generation. `kind` is one of:

    started   (chat service only) `request` is the ChatRequest handle for stop/answer_now
    prefill   the prompt is being read: `done`/`total` tokens, `eta_s` seconds left (None until measurable)
    reasoning `text` is new thinking text (think tags removed)
    answer    `text` is new answer text
    done      the end: `status` done | length | stopped, `stats` (see Generation.stats), `message_id` if saved
    error     the end, failed or refused: `text` says why; `status` error | refused; partial `stats` if any
    """
    kind: str
    text: str = ""
    done: int = 0
    total: int = 0
    eta_s: float | None = None
    status: str = ""
    stats: dict | None = None
    message_id: int | None = None
    request: object = field(default=None, repr=False)


class Generation:
    """A request being generated: its controls (stop, answer_now) and what it produced so far."""

    def __init__(self, async_engine, prompt_ids: list[int], params: SamplingParams, *, keep_at=(),
                 starts_in_reasoning: bool = False, thinking_budget: int | None = None,
                 lstrip_answer: bool = False, request_id: str | None = None, session_id: str | None = None,
                 forced_output=()):
        self.engine = async_engine
        self.prompt_ids, self.params, self.keep_at = list(prompt_ids), params, list(keep_at)
        self.thinking_budget = thinking_budget
        self.forced_output = list(forced_output)  # first output tokens, forced (engine only)
        self.lstrip_answer = lstrip_answer
        self.request_id = request_id or uuid.uuid4().hex
        self.session_id = session_id  # the engine routes a session's turns to one replica (multi-replica mode)
        self.starts_in_reasoning = starts_in_reasoning
        self.splitter = ReasoningSplitter(starts_in_reasoning)
        self.close_ids = async_engine.tokenizer.encode(THINK_CLOSE)
        self.completion_tokens = self.reasoning_tokens = 0
        self.forced_close: str | None = None  # "budget" | "answer_now" once the think block was closed for it
        self.answer_now_requested = False
        self.status: str | None = None
        self.stats: dict = {}
        self._stop_requested = False
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = self._first_token = self._reasoning_end = None
        self._prefill_start: tuple[float, int] | None = None
        self._answer_started = False
        self._cached_tokens: int | None = None  # known from the first token on (a stopped reply keeps it)

    # --- controls (callable from any thread) -------------------------------------------------------------------
    def stop(self) -> None:
        """End the generation now; the events end with a `done` event of status "stopped"."""
        self._stop_requested = True
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)

    def answer_now(self) -> None:
        """Close the think block at the next token (at the first one if the prompt is still being read)."""
        self.answer_now_requested = True

    @property
    def reasoning(self) -> str:
        """Reasoning text emitted so far."""
        return self.splitter.reasoning_text

    @property
    def answer(self) -> str:
        """Answer text emitted so far."""
        text = self.splitter.answer_text
        return text.lstrip() if self.lstrip_answer else text

    def stopped_stats(self) -> dict:
        """End a generation whose consumer left: flush held-back text and return the final stats."""
        if self.status is None:
            self._end("stopped", None)
        return self.stats

    # --- the stream ---------------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ChatEvent]:
        """Run the request; yield its events until a `done` or `error` event (always the last one)."""
        self._loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        self._started = time.perf_counter()
        forced = {"forced_output": self.forced_output} if self.forced_output else {}
        stream = self.engine.stream(self.prompt_ids, self.params, self.request_id, self.keep_at,
                                    starts_in_reasoning=self.starts_in_reasoning, thinking_budget=self.thinking_budget,
                                    session_id=self.session_id, **forced)
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        next_update = None
        try:
            while True:
                next_update = asyncio.ensure_future(anext(stream))
                await asyncio.wait({next_update, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not next_update.done():
                    await _cancel(next_update)  # the engine stream aborts the request as it unwinds
                    for event in self._end("stopped", None):
                        yield event
                    return
                update = next_update.result()
                for event in self._on_update(update):
                    yield event
                if update.finished:
                    return
        finally:  # also when our consumer leaves or is cancelled: free the engine request
            stop_wait.cancel()
            if next_update is not None and not next_update.done():
                await _cancel(next_update)
            await stream.aclose()

    def _on_update(self, update: RequestUpdate) -> list[ChatEvent]:
        if update.cached_tokens is not None:
            self._cached_tokens = update.cached_tokens
        if update.finished:
            events = self._on_tokens(update) if update.token_ids or update.text else []
            if update.finish_reason == "error" or update.error:
                return events + self._end("error", update, update.error or "the engine failed")
            return events + self._end(STATUS_BY_FINISH.get(update.finish_reason, "done"), update)
        if update.token_ids:
            return self._on_tokens(update)
        return [self._prefill_event(update.prefill_done, update.prefill_total)] if update.prefill_total else []

    def _prefill_event(self, done: int, total: int) -> ChatEvent:
        now = time.perf_counter()
        if self._prefill_start is None:
            self._prefill_start = (now, done)
            return ChatEvent("prefill", done=done, total=total)
        t0, done0 = self._prefill_start
        rate = (done - done0) / (now - t0) if now > t0 and done > done0 else 0.0
        return ChatEvent("prefill", done=done, total=total, eta_s=(total - done) / rate if rate else None)

    def _on_tokens(self, update: RequestUpdate) -> list[ChatEvent]:
        events = []
        if self._first_token is None:
            self._first_token = time.perf_counter()
            if self._prefill_start is not None:
                events.append(ChatEvent("prefill", done=update.prefill_total, total=update.prefill_total, eta_s=0.0))
        self.completion_tokens += len(update.token_ids)
        was_reasoning = self.splitter.in_reasoning
        events += self._split(self.splitter.feed(update.text))
        if self.splitter.in_reasoning:
            self.reasoning_tokens = self.completion_tokens
            self._maybe_close_thinking(update.request_id)
        elif was_reasoning and self._reasoning_end is None:  # this update closed the think block: its tokens count
            self._reasoning_end = time.perf_counter()
            self.reasoning_tokens = self.completion_tokens
            budget = self.thinking_budget
            if self.forced_close is None and budget is not None and self.completion_tokens >= budget:
                self.forced_close = "budget"  # closed by the engine at the budget
        return events

    def _maybe_close_thinking(self, request_id: str) -> None:
        if self.forced_close:
            return
        if self.answer_now_requested:
            self.forced_close = "answer_now"
            self.engine.force_tokens(request_id, self.close_ids)

    def _split(self, pieces) -> list[ChatEvent]:
        events = []
        for kind, text in pieces:
            if kind == "answer" and self.lstrip_answer and not self._answer_started:
                text = text.lstrip()
            if text:
                self._answer_started |= kind == "answer"
                events.append(ChatEvent(kind, text))
        return events

    def _end(self, status: str, update: RequestUpdate | None, error: str | None = None) -> list[ChatEvent]:
        events = self._split(self.splitter.finish())
        self.status = status
        self.stats = self._final_stats(status, update)
        if error is not None:
            return events + [ChatEvent("error", error, status="error", stats=self.stats)]
        return events + [ChatEvent("done", status=status, stats=self.stats)]

    def _final_stats(self, status: str, update: RequestUpdate | None) -> dict:
        """Engine stats (ttft, seconds, tokens_per_s, prompt/cached/completion tokens) plus reasoning_tokens,
        answer_tokens, thinking_seconds, finish_reason, status and forced_close; measured here when stopped."""
        now = time.perf_counter()
        first = self._first_token
        stats = dict(update.stats) if update is not None and update.stats else {
            "ttft": (first or now) - self._started, "seconds": now - self._started,
            "tokens_per_s": (self.completion_tokens - 1) / (now - first)
            if first and self.completion_tokens > 1 and now > first else 0.0,
            "prompt_tokens": len(self.prompt_ids), "cached_tokens": self._cached_tokens,
            "completion_tokens": self.completion_tokens}
        if self.splitter.in_reasoning or self.splitter.reasoning_unfinished:
            self.reasoning_tokens = stats["completion_tokens"]
        stats["reasoning_tokens"] = min(self.reasoning_tokens, stats["completion_tokens"])
        stats["answer_tokens"] = stats["completion_tokens"] - stats["reasoning_tokens"]
        end = self._reasoning_end or now
        stats["thinking_seconds"] = end - first if first and stats["reasoning_tokens"] else 0.0
        stats["finish_reason"] = update.finish_reason if update is not None else "abort"
        stats["status"] = status
        stats["forced_close"] = self.forced_close
        return stats


async def _cancel(task: asyncio.Task) -> None:
    """Cancel a task and wait until it has unwound (its finally blocks ran)."""
    task.cancel()
    with suppress(asyncio.CancelledError, StopAsyncIteration):
        await task

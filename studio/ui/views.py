"""View-model functions of the studio page: store dicts and engine stats → chatbot messages, labels and HTML.

Plain functions with no Gradio import, so they are tested directly (tests/test_ui_views.py). The chatbot value is
a list of OpenAI-style dicts; a thought panel is an assistant dict whose metadata has a title (Gradio renders it as
a collapsible accordion: status "pending" = open with a spinner, "done" = closed).
"""
import html
import re

from studio.ui.icons import icon

THINKING_TITLE = "Thinking…"
REASONING_INLINE_CHARS = 4000  # longer earlier reasoning is left out of the page until asked
NO_ANSWER = "*No answer: the reply ended after its thinking.*"
TRANSCRIPT_MESSAGES = 60  # messages of the active path put on the page at first ("show earlier" adds more)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]*`)", re.DOTALL)


def display_text(text: str) -> str:
    """Model or user text as chat Markdown: control characters dropped (they break the renderer) and `<` shown
    as text outside code, so `<tags>` in reasoning or answers are not taken for HTML."""
    pieces = _CODE.split(_CONTROL.sub("", text))
    return "".join(piece if i % 2 else piece.replace("<", "&lt;") for i, piece in enumerate(pieces))


def human_tokens(n: int) -> str:
    """Compact token count: 950, 12.4k, 412k, 1.05M."""
    if n < 0:
        raise ValueError(f"token count must be >= 0, got {n}")
    if n < 1000:
        return str(n)
    if n < 100_000:
        return f"{n / 1000:.1f}".removesuffix(".0") + "k"
    if n < 1_000_000:
        return f"{round(n / 1000)}k"
    return f"{n / 1_000_000:.2f}".rstrip("0").rstrip(".") + "M"


def human_seconds(seconds: float) -> str:
    """Duration for people: 0.42 s, 4.2 s, 41 s, 2 min 5 s."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def thought_title(seconds: float, tokens: int) -> str:
    """The collapsed panel's title: "Thought for 41 s · 12.4k tokens"."""
    return f"Thought for {human_seconds(seconds)} · {human_tokens(tokens)} tokens"


def thought_message(reasoning: str, *, pending: bool, seconds: float = 0.0, tokens: int = 0) -> dict:
    """The reasoning panel: open with a spinner and a live count while thinking, closed with a summary when done."""
    if pending:
        metadata = {"title": THINKING_TITLE, "status": "pending",
                    "log": f"{tokens:,} tokens · {human_seconds(seconds)}"}
    else:
        metadata = {"title": thought_title(seconds, tokens), "status": "done"}
    return {"role": "assistant", "content": display_text(reasoning) or "…", "metadata": metadata}


def stats_title(stats: dict) -> str:
    """One line per answer: "TTFT 0.42 s · 31.5 tok/s · 812 cached"."""
    parts = []
    if isinstance(stats.get("ttft"), (int, float)):
        parts.append(f"TTFT {human_seconds(stats['ttft'])}")
    if stats.get("tokens_per_s"):
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if isinstance(stats.get("cached_tokens"), int):
        parts.append(f"{human_tokens(stats['cached_tokens'])} cached")
    return " · ".join(parts)


def stats_message(stats: dict) -> dict | None:
    """A closed panel under the answer whose title is stats_title and whose body is the full breakdown."""
    title = stats_title(stats)
    if not title:
        return None
    names = [("prompt_tokens", "prompt tokens"), ("cached_tokens", "reused from saved state"),
             ("reasoning_tokens", "reasoning tokens"), ("completion_tokens", "output tokens")]
    rows = [f"| {label} | {stats[key]:,} |" for key, label in names if isinstance(stats.get(key), int)]
    if isinstance(stats.get("seconds"), (int, float)):
        rows.append(f"| total time | {human_seconds(stats['seconds'])} |")
    body = "\n".join(["| | |", "|---|---:|", *rows]) if rows else title
    return {"role": "assistant", "content": body, "metadata": {"title": title, "status": "done"}}


def answer_messages(content: str, reasoning: str, stats: dict, status: str, *,
                    include_reasoning: bool = True) -> list[dict]:
    """The chatbot dicts of one stored assistant message: thought panel, answer, stats panel."""
    messages = []
    if reasoning or stats.get("reasoning_tokens"):
        seconds = stats.get("thinking_seconds") or stats.get("seconds") or 0.0
        shown = reasoning if include_reasoning else (
            f"*{len(reasoning):,} characters of reasoning are not loaded, to keep the page light. "
            "Tick **Load earlier thinking** to read them.*")
        messages.append(thought_message(shown, pending=False, seconds=seconds,
                                        tokens=stats.get("reasoning_tokens") or 0))
    note = {"stopped": "\n\n*Stopped.*", "error": "\n\n*Generation failed.*",
            "interrupted": "\n\n*Interrupted: the server stopped during this reply.*"}.get(status, "")
    if not content and status == "done" and (reasoning or stats.get("reasoning_tokens")):
        note = NO_ANSWER
    if content or note:
        messages.append({"role": "assistant", "content": display_text(content) + note})
    panel = stats_message(stats) if stats else None
    if panel:
        messages.append(panel)
    return messages


def transcript(path: list[dict], attachments: list[dict] = (), *, show_reasoning: bool = False,
               limit: int = TRANSCRIPT_MESSAGES) -> tuple[list[dict], list[int]]:
    """Chatbot value for a session's active path, plus the store message id behind each chatbot row.

    Only the last `limit` messages are included (a note says how many are left out). Earlier reasoning longer than
    REASONING_INLINE_CHARS stays on the server unless show_reasoning. Documents appear as chips, not their text.
    """
    docs: dict[int, list[dict]] = {}
    for attachment in attachments:
        docs.setdefault(attachment["message_id"], []).append(attachment)
    rows, ids = [], []
    hidden = max(0, len(path) - limit)
    if hidden:
        rows.append({"role": "assistant", "content": f"*{hidden} earlier messages are not shown — "
                     "use **Show earlier** or export the chat.*"})
        ids.append(-1)
    for message in path[hidden:]:
        for row in _message_rows(message, docs.get(message["id"], []), show_reasoning):
            rows.append(row)
            ids.append(message["id"])
    return rows, ids


def _message_rows(message: dict, docs: list[dict], show_reasoning: bool) -> list[dict]:
    if message["role"] == "tool" or (message["role"] == "assistant" and "<tool_calls>" in message["content"]):
        from studio.ui.views_tools import message_rows  # tool calls and results as collapsible blocks
        return message_rows(message, show_reasoning)
    if message["role"] == "user":
        chips = "".join(f"Attached `{d['name']}` · {human_tokens(d['num_tokens'])} tokens  \n" for d in docs)
        return [{"role": "user", "content": (chips + "\n" if chips else "") + display_text(message["content"])}]
    inline = show_reasoning or len(message["reasoning"]) <= REASONING_INLINE_CHARS
    return answer_messages(message["content"], message["reasoning"], message["stats"], message["status"],
                           include_reasoning=inline) or [{"role": "assistant", "content": "…"}]


def version_label(message: dict | None) -> str:
    """Sibling navigation label for the selected message: "Reply · version 2 of 3"."""
    if not message:
        return ""
    kind = "Reply" if message["role"] == "assistant" else "Message"
    return f"{kind} · version {message['sibling_index']} of {message['sibling_count']}"


def session_choices(sessions: list[dict]) -> list[tuple[str, str]]:
    """(label, session id) pairs for the sidebar list, in the store's order (newest first)."""
    return [(session["title"], session["id"]) for session in sessions]


def search_choices(results: list[dict]) -> list[tuple[str, str]]:
    """(label, session id) pairs for search hits; content hits show their snippet."""
    return [(r["title"] if r["matched"] == "title" else f"{r['title']} — {r['snippet']}", r["session_id"])
            for r in results]


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before there is a rate."""
    if done <= 0 or elapsed <= 0 or total <= done:
        return None if total > done else 0.0
    return (total - done) * elapsed / done


def banner_html(*, random_weights: bool, state_reuse: bool, model_name: str, note: str = "",
                replicas: list[dict] | None = None) -> str:
    """Notes above the chat: random-weights warning (tiny model; `note` is the server's wording), state reuse, and
    in multi-replica mode the engine replicas alive with their sessions (`replicas`: ReplicaEngine.replicas())."""
    notes = []
    if random_weights and note:
        notes.append(f'<div class="m1-banner warn">{icon("warning")} {html.escape(note)}</div>')
    elif random_weights:
        notes.append(f'<div class="m1-banner warn">{icon("warning")} <b>{html.escape(model_name)}</b> has random weights: it '
                     "babbles. Run with <code>--model</code> and a MiniMax-M1 checkpoint for real answers.</div>")
    if state_reuse:
        notes.append(f'<div class="m1-banner info">{icon("reuse")} State reuse is on: follow-up turns reuse the saved model '
                     "state and cost only their new tokens.</div>")
    else:
        notes.append('<div class="m1-banner info">State reuse is off: this backend re-reads the whole conversation '
                     "every turn (only the m1 engine keeps the model state).</div>")
    if replicas is not None:
        notes.append(replicas_html(replicas))
    return "".join(notes)


def replicas_html(replicas: list[dict]) -> str:
    """"2 of 2 engine replicas alive: a1b2 (3 sessions, 1 running) · c3d4 (2 sessions)"."""
    alive = [r for r in replicas if r.get("alive")]
    parts = []
    for r in alive:
        detail = f"{r.get('sessions', 0)} session{'s' if r.get('sessions', 0) != 1 else ''}"
        detail += f", {r['running']} running" if r.get("running") else ""
        parts.append(f"<code>{html.escape(str(r['replica']))}</code> ({detail})")
    return (f'<div class="m1-banner info" id="m1-replicas">⧉ {len(alive)} of {len(replicas)} engine replicas alive'
            f'{": " + " · ".join(parts) if parts else ""}</div>')



class LiveReply:
    """The reply being generated, built from ChatEvents (studio.generation): thought panel + answer + stats.

    feed(event) takes prefill / reasoning / answer / done / error events; rows() is the chatbot tail for it;
    progress is (done, total, eta_s) while the prompt is read, else None.
    """

    def __init__(self, clock):
        self.clock = clock
        self.started = clock()
        self.reasoning = self.answer = ""
        self.reasoning_tokens = 0
        self.thinking_since: float | None = None
        self.thinking_seconds = 0.0
        self.progress: tuple[int, int, float | None] | None = None
        self.stats: dict = {}
        self.status = "streaming"
        self.error = ""
        self.message_id: int | None = None

    def feed(self, event) -> None:
        """Apply one event."""
        if event.kind == "prefill":
            self.progress = None if event.done >= event.total else (event.done, event.total, event.eta_s)
        elif event.kind == "reasoning":
            self.progress = None
            if self.thinking_since is None:
                self.thinking_since = self.clock()
            self.reasoning += event.text
            self.reasoning_tokens += 1  # one event per engine step and request: one token
            self.thinking_seconds = self.clock() - self.thinking_since
        elif event.kind in ("answer", "tool"):  # tool: a line of the studio's tool loop (views_tools.live_line)
            self.progress = None
            self.answer += event.text
        elif event.kind in ("done", "error"):
            self.progress = None
            self.stats = dict(event.stats or {})
            self.status = event.status or ("error" if event.kind == "error" else "done")
            self.error = event.text if event.kind == "error" else ""
            self.message_id = getattr(event, "message_id", None)

    @property
    def finished(self) -> bool:
        """Whether a done or error event arrived."""
        return self.status != "streaming"

    @property
    def thinking(self) -> bool:
        """Reasoning has started and no answer text has come yet."""
        return bool(self.reasoning) and not self.answer and not self.finished

    def rows(self) -> list[dict]:
        """Chatbot dicts of this reply as it stands."""
        if not self.finished:
            rows = []
            if self.reasoning:
                rows.append(thought_message(self.reasoning, pending=self.thinking, seconds=self.thinking_seconds,
                                            tokens=self.reasoning_tokens))
            placeholder = "" if self.reasoning else "…"
            rows.append({"role": "assistant", "content": display_text(self.answer) or placeholder})
            return [row for row in rows if row["content"]]
        stats = dict(self.stats)
        stats.setdefault("reasoning_tokens", self.reasoning_tokens)
        stats.setdefault("thinking_seconds", self.thinking_seconds)
        status = "stopped" if self.status == "stopped" else "error" if self.status in ("error", "refused") \
            else "done"
        rows = answer_messages(self.answer, self.reasoning, stats, status)
        if self.error:
            rows.append({"role": "assistant", "content": f"**Error:** {self.error}"})
        return rows

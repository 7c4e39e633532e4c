"""The studio's built-in tool loop: the model's reply calls tools, the studio runs them, stores the results as a
tool message and lets the model go on in a new reply, until it answers without a call or `max_tool_steps` rounds
are done (then the last reply stands). Each round streams as a "tool" ChatEvent whose text is the line the live
reply shows; the stored messages render as collapsible call/result blocks (studio.ui.views_tools)."""
from engine.text.tool_calls import ToolCallParser
from studio.generation import ChatEvent
from studio.tools.toolbox import result_content


class ToolLoop:
    """One turn of ChatService with tools on (uses its store, toolbox, _prompt and _generate_one)."""

    def __init__(self, chat, user_id: int, session_id: str, settings):
        self.chat, self.user_id, self.session_id, self.settings = chat, user_id, session_id, settings

    async def run(self, user_msg: int, reply: int, prompt):
        for step in range(self.chat.max_tool_steps + 1):
            calls, events = [], self.chat._generate_one(self.user_id, self.session_id, user_msg, reply, prompt,
                                                        self.settings)
            async for event in events:
                if event.kind == "done" and event.status == "done" and step < self.chat.max_tool_steps:
                    calls = self.calls(reply)
                if calls:
                    break  # the last event: the round goes on instead of ending
                yield event
            await events.aclose()
            if not calls:
                return
            try:
                lines, reply, prompt = self.run_calls(reply, calls)
            except ValueError as exc:  # the results do not fit the window
                yield ChatEvent("error", str(exc), status="error", message_id=reply)
                return
            for line in lines:
                yield ChatEvent("tool", line)

    def calls(self, reply: int) -> list:
        """The calls of a stored reply to the offered tools."""
        parser = ToolCallParser([spec["name"] for spec in self.chat.toolbox.specs])
        parser.feed(self.chat.store.get_message(self.user_id, reply)["content"])
        parser.finish()
        return parser.calls

    def run_calls(self, reply: int, calls: list):
        """Run the calls, store the results and a new empty reply after them; (live lines, reply id, prompt)."""
        store = self.chat.store
        docs = [(a["name"], a["text"]) for a in store.attachments(self.user_id, self.session_id, with_text=True)
                if a["message_id"] is not None]
        results = [{"name": c.name, "arguments": c.arguments, "result": self.chat.toolbox.run(c.name, c.arguments,
                                                                                              docs)} for c in calls]
        tool_id = store.add_child(self.user_id, reply, "tool", result_content(results))
        new_reply = store.add_child(self.user_id, tool_id, "assistant", "", status="streaming")
        history = store.prompt_messages(self.user_id, self.session_id, before=new_reply,
                                        replay_thinking=self.settings.replay_thinking)
        try:
            prompt = self.chat._prompt(history, self.settings)
        except ValueError:
            store.update_message(self.user_id, new_reply, status="error", stats={"error": "context window full"})
            raise
        return [live_line(r["name"], r["arguments"], r["result"]) for r in results], new_reply, prompt


def live_line(name: str, arguments: str, result: str) -> str:
    """The line a tool round adds to the live reply: "🔧 calculator {...} → 42" (Markdown; the view escapes it)."""
    short = result if len(result) <= 200 else result[:200] + "…"
    return f"\n\n🔧 {name} {arguments} → {short}\n\n"

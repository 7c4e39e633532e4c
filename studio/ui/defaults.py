"""Settings defaults of the studio page: each user's stored defaults for new chats, the per-chat overrides note
("This chat differs from your defaults: Temperature"), and the preset radio following the system prompt.

`DefaultsHandlers(services, sessions)`; its handlers take and return settings panel values (studio/ui/values.py).
"""
import html
from dataclasses import asdict, fields

import gradio as gr

from studio.chat_settings import SYSTEM_PRESETS, ChatSettings
from studio.store.defaults import UserDefaults
from studio.ui.values import DEFAULT_SETTINGS, settings_from, settings_values

LABELS = {"system_prompt": "System prompt", "temperature": "Temperature", "top_p": "Top-p",
          "max_tokens": "Max output tokens", "thinking_budget": "Thinking budget",
          "replay_thinking": "Replay earlier thinking"}


def preset_of(system_prompt: str) -> str:
    """The preset whose text is this system prompt, else "Custom"."""
    return next((name for name, text in SYSTEM_PRESETS.items() if text == (system_prompt or "")), "Custom")


def overrides(settings: ChatSettings, defaults: ChatSettings) -> list[str]:
    """Labels of the settings where this chat differs from the user's defaults."""
    mine, base = asdict(settings), asdict(defaults)
    return [label for key, label in LABELS.items() if mine[key] != base[key]]


def overrides_html(changed: list[str]) -> str:
    """The note at the top of Settings: which settings are this chat's own."""
    if not changed:
        return '<div class="m1-overrides same">This chat uses your defaults.</div>'
    return (f'<div class="m1-overrides changed"><b>This chat differs from your defaults:</b> '
            f'{html.escape(", ".join(changed))}</div>')


class DefaultsHandlers:
    """Per-user defaults over services.store (table user_defaults)."""

    def __init__(self, services, sessions):
        self.sessions, self.defaults = sessions, UserDefaults(services.store)

    def settings_for(self, uid: int) -> ChatSettings:
        """The user's defaults for a new chat (the built-in ones until they save their own)."""
        saved = self.defaults.get(uid) or {}
        names = {f.name for f in fields(ChatSettings)}
        return ChatSettings(**{k: v for k, v in saved.items() if k in names}) if saved else \
            settings_from(*DEFAULT_SETTINGS)

    def new_chat_values(self, request: gr.Request) -> tuple:
        """Settings panel values for a new chat: the user's defaults."""
        return settings_values(self.settings_for(self.sessions.uid(request)))

    def save(self, request: gr.Request, *panel) -> str:
        """"Save as my defaults for new chats": store the panel; returns the overrides note (now none)."""
        uid, settings = self.sessions.uid(request), settings_from(*panel).check()
        self.defaults.save(uid, asdict(settings))
        return self.note(request, *panel)

    def reset(self, request: gr.Request) -> tuple:
        """"Use my defaults in this chat": the panel takes the user's defaults (the chat saves them on its next
        turn). Returns the settings panel values."""
        return self.new_chat_values(request)

    def note(self, request: gr.Request, *panel) -> str:
        """The overrides note for these panel values."""
        return overrides_html(overrides(settings_from(*panel), self.settings_for(self.sessions.uid(request))))

"""Values of the studio page's components: the settings panel <-> ChatSettings, and Gradio update dicts.

The handlers return plain tuples in the order of the component lists in studio/ui/ui.py (VIEW has 9 entries);
`skip()` changes nothing, `only(i, value)` changes one entry.
"""
from studio.ui import views
from studio.chat_settings import DEFAULT_MAX_TOKENS, SYSTEM_PRESETS, ChatSettings

VIEW_SIZE = 9


def settings_from(preset, system, temperature, top_p, max_tokens, thinking_budget, replay) -> ChatSettings:
    """ChatSettings from the settings panel (thinking budget 0 = unlimited)."""
    budget = int(thinking_budget or 0)
    return ChatSettings(system_prompt=system or "", temperature=float(temperature), top_p=float(top_p),
                        max_tokens=int(max_tokens), thinking_budget=budget or None, replay_thinking=bool(replay))


def settings_values(settings: ChatSettings) -> tuple:
    """The settings panel values (preset, system, temperature, top_p, max tokens, thinking budget, replay)."""
    preset = next((name for name, text in SYSTEM_PRESETS.items() if text == settings.system_prompt), "Custom")
    return (preset, settings.system_prompt, settings.temperature, settings.top_p, settings.max_tokens,
            settings.thinking_budget or 0, settings.replay_thinking)


DEFAULT_SETTINGS = settings_values(ChatSettings(max_tokens=DEFAULT_MAX_TOKENS))


def radio(sessions: list[dict], sid) -> dict:
    """The sidebar list update: these sessions, `sid` selected."""
    return {"choices": views.session_choices(sessions), "value": sid, "__type__": "update"}


def skip() -> dict:
    """An update that changes nothing."""
    return {"__type__": "update"}


def only(index: int | None = None, value=None, size: int = VIEW_SIZE, **more) -> tuple:
    """VIEW values that change nothing, except `value` at `index` (and at_<i>=value keyword pairs)."""
    changed = {int(k[3:]): v for k, v in more.items()}
    if index is not None:
        changed[index] = value
    return tuple(changed[i] if i in changed else skip() for i in range(size))

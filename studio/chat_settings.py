"""Per-session chat settings: system prompt (with M1's presets), sampling, output and thinking limits.

Stored in the session row: `system_prompt` and `replay_thinking` in their own columns, the rest in its
`settings` JSON (see ChatSettings.from_session / ChatService.save_settings).

force_think_start (default on): the prompt ends with the generation prompt plus "<think>\\n", as M1 always starts
its reply with it. The reasoning then streams from the first token, and the model state is kept right before
the forced tag so the next turn (whose history has no think block) reuses everything up to there. With the tiny
random-weights model this is also what makes the reasoning panel appear.
replay_thinking (default off): earlier turns' reasoning is kept in the store but not sent back to the model; on,
each earlier answer is replayed as `<think>\\n{reasoning}\\n</think>\\n{answer}`.
"""
from dataclasses import asdict, dataclass, fields

from engine.serving.sampling import SamplingParams

SYSTEM_PRESETS = {
    "General": "You are a helpful assistant.",
    "Math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "Web development": (
        "You are an expert web developer. Build what the user asks as one complete, self-contained HTML file "
        "with its CSS and JavaScript inline and no external dependencies unless asked. Make it look polished and "
        "work on desktop and mobile. Return the whole file in a single ```html code block, followed by a short "
        "note on how to use it."),
}
MAX_OUTPUT_TOKENS = 80_000
DEFAULT_MAX_TOKENS = 8192


@dataclass
class ChatSettings:
    """What the next reply is generated with. Validate with `check()` (ValueError naming the setting)."""
    system_prompt: str = SYSTEM_PRESETS["General"]
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = DEFAULT_MAX_TOKENS
    thinking_budget: int | None = None
    replay_thinking: bool = False
    force_think_start: bool = True
    seed: int | None = None

    def check(self) -> "ChatSettings":
        """Raise ValueError for an out-of-range setting; return self."""
        if not isinstance(self.system_prompt, str):
            raise ValueError(f"system_prompt must be text, got {type(self.system_prompt).__name__}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= MAX_OUTPUT_TOKENS:
            raise ValueError(f"max_tokens must be an integer from 1 to {MAX_OUTPUT_TOKENS:,}, got {self.max_tokens}")
        if self.thinking_budget is not None and (not isinstance(self.thinking_budget, int) or self.thinking_budget < 0):
            raise ValueError(f"thinking_budget must be None (unlimited) or an integer >= 0, got {self.thinking_budget}")
        self.sampling_params()  # the engine's own ranges too: finite numbers, a seed torch accepts
        return self

    def sampling_params(self) -> SamplingParams:
        """The engine's sampling parameters for these settings."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              seed=self.seed)

    def to_json(self) -> dict:
        """The fields kept in the session's settings JSON (system prompt and replay switch have columns)."""
        data = asdict(self)
        del data["system_prompt"], data["replay_thinking"]
        return data

    @classmethod
    def from_session(cls, session: dict) -> "ChatSettings":
        """Settings of a stored session (unknown JSON keys are ignored, missing ones take the defaults)."""
        names = {f.name for f in fields(cls)}
        stored = {k: v for k, v in (session.get("settings") or {}).items() if k in names}
        system = session.get("system_prompt") or ""
        return cls(**{**stored, "system_prompt": system, "replay_thinking": bool(session.get("replay_thinking"))})

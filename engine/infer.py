"""Interactive multi-turn chat in the terminal, like `swift infer`, with the reasoning shown apart from the answer.

    python -m engine.infer --model DIR [--stream] [--max-new-tokens N] [--temperature T] [--top-p P] [--system TEXT]

Commands: /clear starts a new conversation, /exit (or Ctrl-D) quits. Follow-up turns reuse the saved model state.
"""
import argparse
import sys
from pathlib import Path

from .text.chat_format import strip_think
from .serving.llm_engine import EngineArgs, LLMEngine
from .text.reasoning import ReasoningSplitter
from .serving.sampling import SamplingParams
from .model.tiny import write_checkpoint

DEFAULT_MODEL = Path("data/models/m1-tiny")
DIM, RESET = "\033[2m", "\033[0m"


def ensure_default_model(path: Path = DEFAULT_MODEL) -> Path:
    """The embedded default: a tiny random-weights M1 written on first use."""
    if not (path / "config.json").exists():
        write_checkpoint(path, layout="official", seed=0)
    return path


def chat_turn(engine: LLMEngine, messages: list[dict], params: SamplingParams, stream: bool, out=sys.stdout) -> str:
    """Generate one assistant turn, printing reasoning dimmed and the answer plain. Returns the raw output text."""
    prompt = engine.tokenizer.encode_chat(messages)
    rid = engine.add_request(prompt, params)
    splitter, text, final = ReasoningSplitter(), "", None
    kind_shown = None
    while final is None:
        for u in engine.step():
            if u.request_id != rid:
                continue
            text += u.text
            for ev in splitter.feed(u.text) + (splitter.finish() if u.finished else []):
                if stream:
                    if ev.kind != kind_shown:
                        out.write("\n[thinking] " if ev.kind == "reasoning" else "\n[answer] ")
                        kind_shown = ev.kind
                    out.write(f"{DIM}{ev.text}{RESET}" if ev.kind == "reasoning" else ev.text)
                    out.flush()
            if u.finished:
                final = u
    if not stream:
        if splitter.reasoning_text:
            out.write(f"[thinking] {DIM}{splitter.reasoning_text}{RESET}\n")
        out.write(f"[answer] {splitter.answer_text}")
    s = final.stats or {}
    out.write(f"\n{DIM}({s.get('completion_tokens', 0)} tokens, {s.get('tokens_per_s', 0):.1f} tok/s, "
              f"ttft {s.get('ttft', 0) * 1000:.0f} ms, reused {s.get('cached_tokens', 0)} prompt tokens"
              f"{', ' + final.error if final.error else ''}){RESET}\n")
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Chat with an M1 checkpoint in the terminal.")
    ap.add_argument("--model", default=None, help="checkpoint directory (default: the tiny random-weights model)")
    ap.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--system", default="You are a helpful assistant.")
    ap.add_argument("--device", default=None)
    a = ap.parse_args(argv)
    model = Path(a.model) if a.model else ensure_default_model()
    engine = LLMEngine(str(model), device=a.device, args=EngineArgs())
    note = (model / "generation_config.json").read_text(errors="ignore") if (model / "generation_config.json").exists() else ""
    print(f"M1 Studio CLI · {model} · {engine.device}" + (" · RANDOM WEIGHTS (it babbles)" if "random weights" in note else ""))
    params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_new_tokens)
    messages = [{"role": "system", "content": a.system}] if a.system else []
    base = list(messages)
    while True:
        try:
            line = input("\n> ").strip()
        except EOFError:
            break
        if line in ("/exit", "/quit"):
            break
        if line == "/clear":
            messages = list(base)
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        text = chat_turn(engine, messages, params, a.stream)
        messages.append({"role": "assistant", "content": strip_think(text)})


if __name__ == "__main__":
    main()

"""Per-token cost of the grammar constraint (engine/serving/grammar.py), on the host with M1's full vocabulary.

    python bench/grammar.py [--merges N] [--device cpu|cuda] [--repeat R]

Replays a realistic M1 tool-call reply (a think block, then a call whose arguments follow a JSON schema) token by
token through a Constraint, as the engine does each step: fill the bitmask, mask a [1, V] fp32 logits row
(`apply_constraints`), accept the token. Prints µs/token for the think block (free text under the grammar) and
for the constrained call, against an unconstrained step's baseline (nothing: the engine skips the mask then), and
writes results/grammar_<device>.json.
"""
import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import xgrammar as xgr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.serving.grammar import Grammars, apply_constraints  # noqa: E402
from engine.text import output_format  # noqa: E402
from engine.text.tokenizer import load_tokenizer, write_tokenizer_files  # noqa: E402

TOOLS = [{"name": "get_current_weather", "parameters": {"type": "object", "properties": {
    "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer"}, "details": {"type": "array", "items": {"type": "string"}}},
    "required": ["location"]}},
    {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]
THINK = ("<think>\nThe user asks for the weather in San Francisco over the next three days, in celsius. I should call "
         "get_current_weather with the location, the unit and the number of days, and ask for wind and humidity.\n"
         "</think>\n")
CALL = ('<tool_calls>\n{"name": "get_current_weather", "arguments": {"location": "San Francisco, CA", "unit": '
        '"celsius", "days": 3, "details": ["wind", "humidity"]}}\n</tool_calls>')


def run(grammars, tokenizer, device: str, repeat: int) -> dict:
    tag = output_format.structural_tag(output_format.tool_calls_format(TOOLS))
    think_ids, call_ids = tokenizer.encode(THINK), tokenizer.encode(CALL)
    logits = torch.randn(1, grammars.vocab_size, device=device)
    times = {"think": [], "call": []}
    fills = {"think": [], "call": []}
    bitmask = xgr.allocate_token_bitmask(1, grammars.vocab_size)
    for _ in range(repeat):
        constraint = grammars.constraint(tag)
        for phase, ids in (("think", think_ids), ("call", call_ids)):
            for token in ids:
                row = logits.clone()
                start = time.perf_counter()
                constraint.fill(bitmask, 0)
                fills[phase].append(time.perf_counter() - start)
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                apply_constraints(row, [constraint])
                constraint.accept(token)
                if device == "cuda":
                    torch.cuda.synchronize()
                times[phase].append(time.perf_counter() - start)
                assert not constraint.failed and torch.isfinite(row[0, token]), (phase, token)
    out = {phase: {"tokens": len(t) // repeat, "us_per_token_median": 1e6 * sorted(t)[len(t) // 2],
                   "us_per_token_mean": 1e6 * sum(t) / len(t),
                   "fill_only_us_median": 1e6 * sorted(fills[phase])[len(t) // 2]} for phase, t in times.items()}
    assert constraint.completed, "the replayed reply should complete the grammar"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--merges", type=int, default=None, help="BPE merges of M1's tokenizer (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vocab = write_tokenizer_files(tmp, args.merges)
        tokenizer = load_tokenizer(tmp)
        start = time.perf_counter()
        grammars = Grammars(tokenizer, vocab)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        grammars.compile(output_format.structural_tag(output_format.tool_calls_format(TOOLS)))
        compile_s = time.perf_counter() - start
        result = run(grammars, tokenizer, args.device, args.repeat)
    card = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    report = {"card": card, "device": args.device, "vocab": vocab, "tokenizer_info_s": setup, "compile_s": compile_s,
              "threads": torch.get_num_threads(), **result}
    print(json.dumps(report, indent=1))
    out = Path(__file__).resolve().parent / "results" / f"grammar_{args.device}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

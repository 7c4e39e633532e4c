"""Make the kernel variants that won on the device the engine's defaults, from the benches' JSON.

    python bench/apply_winners.py DIR     # DIR holds lightning_prefill_*.json and/or prefill_variants_*.json

bench/lightning_prefill.py records the fastest lightning prefill within the error bar ("best");
bench/prefill_variants.py records the lines to change ("advice": "file: NAME[key] = value; NAME = value", or "keep
..." when the default stays). This script edits those one-line assignments in place and prints each change, so the
same command run on the device (before the end-to-end bench) and here (to commit) gives the same tree.
"""
import ast
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIGHTNING = "kernels/lightning/__init__.py"


def literal(value) -> str:
    """Python source for a literal, double-quoted like the rest of the tree."""
    return repr(value).replace("'", '"')


def assign(root: str, path: str, name: str, key, value) -> str:
    """Set `NAME = value` (key None) or `NAME[key] = value` on the single line that defines NAME in `path`."""
    full = os.path.join(root, path)
    text = open(full).read()
    line = re.search(rf"^{name} = (.*)$", text, re.M)
    if line is None:
        raise SystemExit(f"{path}: no one-line definition of {name}")
    current = ast.literal_eval(line.group(1).split("  #")[0])
    if key is None:
        new = value
    else:
        new = dict(current)
        new[key] = value
    if new == current:
        return f"{path}: {name} already {literal(new)}"
    text = text[:line.start(1)] + literal(new) + text[line.end(1):]
    open(full, "w").write(text)
    return f"{path}: {name} = {literal(new)} (was {literal(current)})"


def statements(advice: str):
    """(path, name, key, value) for each assignment of one advice line; nothing for "keep ..." parts."""
    path, _, rest = advice.partition(": ")
    path = path.split(" (")[0]
    for part in rest.split("; "):
        part = part.strip()
        m = re.fullmatch(r"(\w+)(?:\[(.+?)\])? = (.+)", part)
        if m is None or part.startswith("keep"):
            continue
        key = ast.literal_eval(m.group(2)) if m.group(2) else None
        yield path, m.group(1), key, ast.literal_eval(m.group(3) or "''")


def device_results(folder: str, bench: str) -> list[str]:
    """The bench's JSON files in `folder`, less CPU smoke runs (interpreter tiles say nothing about the GPU)."""
    return [f for f in sorted(glob.glob(os.path.join(folder, f"{bench}_*.json"))) if not f.endswith("_smoke.json")]


def main(folder: str, root: str = ROOT) -> list[str]:
    done = []
    for f in device_results(folder, "lightning_prefill"):
        r = json.load(open(f))
        if r.get("best"):
            done.append(assign(root, LIGHTNING, "TRITON_PREFILL", None, r["best"]))
    for f in device_results(folder, "prefill_variants"):
        for line in json.load(open(f)).get("advice", []):
            done += [assign(root, *s) for s in statements(line)]
    return done


if __name__ == "__main__":
    for change in main(sys.argv[1]):
        print(change)

"""Mutation score per module from mutmut's state in mutants/ (written by `make mutation`; `mutmut run` fills it).

Reads every `mutants/**/*.py.meta` (mutmut's per-file record: mutant name -> exit code of its test run) and prints a
markdown table: killed / checked per module, plus the names of the surviving mutants (`mutmut show NAME` shows one).
Exit codes follow mutmut.stats.status_by_exit_code: 1 or 3 killed, 0 survived, 5/33 no tests, 36/24/152/255 timeout.
"""
import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
          None: "not checked"}


def module_counts(meta: Path) -> tuple[Counter, list[str]]:
    """Status counts and surviving mutant names of one mutated file."""
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    counts = Counter(STATUS.get(code, "suspicious") for code in codes.values())
    return counts, sorted(name for name, code in codes.items() if code == 0)


def score(counts: Counter) -> str:
    """Killed over the mutants that were run (a timeout is not counted as killed)."""
    run = sum(n for status, n in counts.items() if status != "not checked")
    return f"{counts['killed'] / run:.1%}" if run else "-"


def summary(root: Path = Path("mutants")) -> str:
    rows = ["| module | killed | survived | no tests | timeout | not checked | score |", "|---|---|---|---|---|---|---|"]
    survivors = []
    for meta in sorted(root.rglob("*.py.meta")):
        counts, alive = module_counts(meta)
        module = str(meta.relative_to(root))[: -len(".meta")]
        rows.append(f"| {module} | {counts['killed']} | {counts['survived']} | {counts['no tests']} | "
                    f"{counts['timeout']} | {counts['not checked']} | {score(counts)} |")
        survivors += alive
    return "\n".join(rows + ["", f"Surviving mutants ({len(survivors)}; `mutmut show NAME`):"]
                     + [f"- {name}" for name in survivors])


if __name__ == "__main__":
    text = summary(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("mutants"))
    Path("mutants/summary.md").write_text(text + "\n")
    print(text)

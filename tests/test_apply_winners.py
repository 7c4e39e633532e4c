"""bench/apply_winners.py: the device benches' winners become one-line edits of the kernel defaults."""
import json
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import apply_winners  # noqa: E402

FILES = ["kernels/lightning/__init__.py", "kernels/attention/prefill.py", "kernels/moe/fused.py"]


@pytest.fixture
def tree(tmp_path):
    for f in FILES:
        os.makedirs(tmp_path / os.path.dirname(f), exist_ok=True)
        shutil.copy(os.path.join(ROOT, f), tmp_path / f)
    return tmp_path


def defaults(root) -> dict:
    import ast
    import re
    out = {}
    for f in FILES:
        for name, value in re.findall(r"^([A-Z_0-9]+) = (.*)$", open(os.path.join(root, f)).read(), re.M):
            try:
                out[name] = ast.literal_eval(value.split("  #")[0])
            except (ValueError, SyntaxError):
                pass
    return out


def test_winners_become_the_defaults_and_keep_lines_change_nothing(tree, tmp_path):
    results = tmp_path / "out"
    results.mkdir()
    json.dump({"best": "fused/split-s/s3/g16384"}, open(results / "lightning_prefill_h200.json", "w"))
    json.dump({"advice": [
        "kernels/attention/prefill.py: GPU_CONFIG[128] = (128, 64, 8, 2); VARIANT = 'tma+fold'",
        "kernels/moe/fused.py (int8, best silu_up+fast_int8, mean share 56.0%): SILU_UP['int8'] = True; "
        "SILU_UP_TILES['int8'] = (128, 64, 64, 8, 3, False, 8); FAST_INT8 = True",
        "kernels/moe/fused.py (bf16, best (default), mean share 64.0%): keep SILU_UP['bf16'] = False"]},
        open(results / "prefill_variants_h200.json", "w"))
    before = defaults(tree)
    changes = apply_winners.main(str(results), str(tree))
    after = defaults(tree)
    assert after["TRITON_PREFILL"] == "fused/split-s/s3/g16384"
    assert after["GPU_CONFIG"][128] == (128, 64, 8, 2) and after["GPU_CONFIG"][64] == before["GPU_CONFIG"][64]
    assert after["VARIANT"] == "tma+fold" and after["FAST_INT8"] is True
    assert after["SILU_UP"] == {"int8": True, "bf16": before["SILU_UP"]["bf16"]}
    assert after["SILU_UP_TILES"]["int8"] == (128, 64, 64, 8, 3, False, 8)
    assert after["PREFILL_TILES"] == before["PREFILL_TILES"]
    assert len(changes) == 6 and all("was" in c for c in changes)
    assert all(line.startswith(("kernels/lightning", "kernels/attention", "kernels/moe")) for line in changes)
    assert apply_winners.main(str(results), str(tree)) == [c.split(" = ")[0] + " already " + c.split(" = ", 1)[1]
                                                            .split(" (was")[0] for c in changes]

"""The interactive CLI (`python -m engine.infer`) driven through stdin like a user at a terminal."""
import re
import subprocess
import sys


def test_cli_multi_turn_reuses_state(tiny_official):
    proc = subprocess.run([sys.executable, "-m", "engine.infer", "--model", str(tiny_official), "--stream",
                           "--max-new-tokens", "8", "--temperature", "0"],
                          input="hello there\nand a follow-up\n/exit\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stdout
    reused = [int(n) for n in re.findall(r"reused (\d+) prompt tokens", proc.stdout)]
    assert len(reused) == 2 and reused[0] == 0 and reused[1] > 10
    assert proc.stdout.count("[answer]") == 2

"""Start `python app.py ...` on a free loopback port for a test and stop it afterwards."""
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], data_dir: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Start app.py; return (process, base URL) once /health answers. Output goes to data_dir/server.log."""
    port = free_port()
    log_path = Path(data_dir) / "server.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "app.py", *args, "--port", str(port), "--data-dir", str(data_dir)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text())
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"the app did not answer /health in {timeout:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def running_app(args: list[str], data_dir: Path, timeout: float = 120):
    """Yield the base URL once /health answers; the server's output goes to data_dir/server.log."""
    proc, base = start_app(args, data_dir, timeout)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)

"""One process per --data-dir: a second app on the same directory is refused with the holder's pid and host; a lock
left by a process killed with -9 is taken over (real processes, real app.py)."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from studio.store.data_lock import DataDirLock, DataDirLocked
from tests.app_server import ROOT, running_app

HOLD = ("import sys, time; sys.path.insert(0, {root!r}); from studio.store.data_lock import DataDirLock; "
        "DataDirLock({path!r}).acquire(); print('held', flush=True); time.sleep(60)")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_pid_and_host(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(DataDirLocked) as info:
            DataDirLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and str(tmp_path) in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = DataDirLock(tmp_path).acquire()
    assert f"pid {os.getpid()}" in (tmp_path / DataDirLock.FILE_NAME).read_text()
    lock.release()
    DataDirLock(tmp_path).acquire().release()  # released: free again


def test_two_apps_on_one_data_dir(tiny_official, tmp_path):
    args = ["--model", str(tiny_official), "--device", "cpu"]
    with running_app(args, tmp_path):
        started = time.perf_counter()
        second = subprocess.run([sys.executable, "app.py", *args, "--port", "1", "--data-dir", str(tmp_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "is in use by another M1 Studio process" in second.stderr and "pid " in second.stderr
        assert "model loaded" not in second.stdout  # refused before the model is loaded
        assert time.perf_counter() - started < 60

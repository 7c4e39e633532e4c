"""One process per data directory: an exclusive `fcntl.flock` on DATA_DIR/.m1-studio.lock, with the holder's pid,
host and start time written inside for the refusal message.

    lock = DataDirLock("data").acquire()      # DataDirLocked if another live process holds it
    ...
    lock.release()

The kernel drops a flock when its process dies (kill -9 included), so a lock left by a dead process is simply taken
over; the text inside is only a description of the holder. Two processes on one directory would race on the
running replies of the session database (one marks the other's live reply interrupted), hence the refusal.
"""
import datetime
import fcntl
import os
import socket
from pathlib import Path


class DataDirLocked(RuntimeError):
    """Another live process holds the data directory."""


class DataDirLock:
    """An exclusive, non-blocking lock on a data directory, held until release() or the process ends."""

    FILE_NAME = ".m1-studio.lock"

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / self.FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        """Take the lock or raise DataDirLocked naming the holder (pid, host, since when)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise DataDirLocked(f"the data directory {self.data_dir} is in use by another M1 Studio process "
                                f"({holder}); stop it, or start this one with another --data-dir") from None
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {started}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays; its text is stale until the next holder rewrites it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

"""Read an upload in a child process with a memory cap (RLIMIT_AS) and a time limit; cancelling the caller kills it.

    doc = await read_isolated(path, original_name="q3.xlsx", limits=DEFAULT_LIMITS, progress=cb)

The reading budgets (studio.documents.limits) stop the bombs they know; the child's caps stop the rest without
touching the server: out of memory or out of time, the child is killed and the caller gets a DocumentError naming
the file and the limit. Children fork from a forkserver that preloads the readers (no engine, no torch), so a read
starts in milliseconds. Token counts are estimates (the engine's tokenizer stays in the server).
"""
import asyncio
import multiprocessing
import os
import resource
import threading
import time

from studio.documents.documents import DEFAULT_MAX_BYTES, Document, DocumentError, iter_read_document
from studio.documents.limits import DEFAULT_LIMITS, ReadLimits

MEMORY_MB = 4096
TIMEOUT_S = 300.0
POLL_S = 0.05
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["studio.documents.documents"])


async def read_isolated(source: str | os.PathLike | bytes, *, original_name: str | None = None,
                        max_bytes: int = DEFAULT_MAX_BYTES, limits: ReadLimits = DEFAULT_LIMITS,
                        memory_mb: int = MEMORY_MB, timeout_s: float = TIMEOUT_S, progress=None,
                        on_start=None) -> Document:
    """read_document in a child process. progress(done, total, stage) and on_start(pid) are called from a worker
    thread. Raises DocumentError (the reader's, or out of memory / time); cancelled → the child is killed."""
    name = original_name or (os.path.basename(source) if not isinstance(source, bytes) else "upload")
    cancel = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(
        None, _run, source, name, max_bytes, limits, memory_mb, timeout_s, progress, on_start, cancel)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()  # the worker kills the child within POLL_S
        raise


def _run(source, name, max_bytes, limits, memory_mb, timeout_s, progress, on_start, cancel) -> Document | None:
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(sender, source, name, max_bytes, limits, memory_mb), daemon=True)
    child.start()
    sender.close()
    if on_start is not None:
        on_start(child.pid)
    deadline = time.monotonic() + timeout_s
    try:
        while not cancel.is_set():
            if time.monotonic() > deadline:
                raise DocumentError(f"{name} took longer than {timeout_s:.0f} s to read (the reading time limit)")
            if not receiver.poll(POLL_S):
                if child.is_alive() or receiver.poll():
                    continue
                break
            try:
                kind, value = receiver.recv()
            except EOFError:
                break
            if kind == "progress" and progress is not None:
                progress(*value)
            elif kind == "document":
                return value
            elif kind == "error":
                raise DocumentError(value)
            elif kind == "memory":
                break
        if cancel.is_set():
            return None
        child.join(1.0)
        raise DocumentError(f"{name} could not be read: the reading process ran out of memory or crashed (memory "
                            f"limit {memory_mb} MiB, exit code {child.exitcode})")
    finally:
        if child.is_alive():
            child.kill()
        child.join(5.0)
        receiver.close()


def _child(sender, source, name, max_bytes, limits, memory_mb) -> None:
    """The reading process: cap the address space, read, send progress and the Document (or the error)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    try:
        for item in iter_read_document(source, original_name=name, max_bytes=max_bytes, limits=limits):
            sender.send(("document", item) if isinstance(item, Document) else ("progress", tuple(item)))
    except MemoryError:
        sender.send(("memory", None))
    except Exception as exc:  # noqa: BLE001 - a reader bug must not look like a hang
        if "memory allocation failed" in str(exc).lower():  # libxml2 (lxml) reports malloc failures this way
            sender.send(("memory", None))
        elif isinstance(exc, DocumentError):
            sender.send(("error", str(exc)))
        else:
            sender.send(("error", f"{name} could not be read ({type(exc).__name__}: {exc})"))
    finally:
        sender.close()

"""Where a model comes from: a local directory, a ModelScope id or a Hugging Face id -> a local directory.

    resolve_model("/models/MiniMax-M1-80k")                       # a directory with config.json
    resolve_model("MiniMax/MiniMax-M1-80k", source="modelscope")  # or "modelscope:MiniMax/MiniMax-M1-80k"
    resolve_model("MiniMaxAI/MiniMax-M1-80k")                     # Hugging Face (or "hf:MiniMaxAI/...")

Both hub clients are optional imports and show their own download progress bars; `load_progress()` is a tqdm bar
for the weight loader. Offline, unknown or gated ids fail with a SourceError that names the id and the way out.
"""
import re
from pathlib import Path

SOURCES = ("auto", "local", "modelscope", "hf")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PREFIXES = {"modelscope:": "modelscope", "ms:": "modelscope", "hf:": "hf", "huggingface:": "hf"}


class SourceError(RuntimeError):
    """A model that cannot be found or fetched; the message names it and what to do."""


def split_source(spec: str, source: str = "auto") -> tuple[str, str]:
    """(source, id or path) from `spec`, which may carry a `modelscope:` / `hf:` prefix."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    for prefix, name in _PREFIXES.items():
        if spec.startswith(prefix):
            return name, spec[len(prefix):]
    if source != "auto":
        return source, spec
    if Path(spec).expanduser().exists() or not _REPO_ID.match(spec):
        return "local", spec
    return "hf", spec


def resolve_model(spec: str | Path, source: str = "auto", revision: str | None = None,
                  cache_dir: str | None = None) -> Path:
    """A local directory holding the checkpoint named by `spec` (downloading it from a hub if needed)."""
    kind, name = split_source(str(spec), source)
    if kind == "local":
        path = Path(name).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model path {name!r} is not a directory (expected a checkpoint with config.json)")
        return path
    fetch = _modelscope if kind == "modelscope" else _huggingface
    return Path(fetch(name, revision, cache_dir))


def _modelscope(repo_id: str, revision, cache_dir) -> str:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise SourceError(f"cannot fetch {repo_id!r} from ModelScope: modelscope is not installed: "
                          "pip install modelscope") from None
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # modelscope raises plain HTTP/ValueErrors for unknown ids and no network
        raise SourceError(f"cannot fetch {repo_id!r} from ModelScope ({type(e).__name__}: {e}); check the id "
                          "(e.g. MiniMax/MiniMax-M1-80k) and the network, or pass a local directory") from e


def _huggingface(repo_id: str, revision, cache_dir) -> str:
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise SourceError(f"cannot fetch {repo_id!r} from Hugging Face: huggingface_hub is not installed: "
                          "pip install huggingface_hub") from None
    try:
        return huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir)
    except errors.RepositoryNotFoundError as e:
        raise SourceError(f"Hugging Face has no model {repo_id!r} (or it is private/gated: log in with "
                          "`hf auth login`); check the id, e.g. MiniMaxAI/MiniMax-M1-80k") from e
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, OSError) as e:
        raise SourceError(f"cannot download {repo_id!r} from Hugging Face: offline or unreachable, and it is not in "
                          f"the local cache ({type(e).__name__}); connect, or pass a local directory") from e


def load_progress(desc: str = "loading weights"):
    """A `progress(done, total, name)` callback for the weight loader that draws a tqdm bar (closed at the end)."""
    from tqdm.auto import tqdm
    bar = None

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="tensor")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return progress

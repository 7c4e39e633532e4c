"""M1 Studio: the chat studio at /, an OpenAI-compatible API at /v1 and /health, on one port.

    python app.py                                   # tiny random-weights demo model, created on first run
    python app.py --model /models/MiniMax-M1-80k --port 8000 --api-key sk-local --auth alice:secret
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "data" / "models" / "m1-tiny"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (cheap: nothing heavy is imported before parsing)."""
    ap = argparse.ArgumentParser(description="M1 Studio: chat studio + OpenAI-compatible API for MiniMax-M1.")
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="checkpoint directory or hub id (e.g. MiniMaxAI/MiniMax-M1-80k; default: the tiny "
                         "random-weights model, written there on first run)")
    ap.add_argument("--model-source", default="auto", choices=["auto", "local", "huggingface", "modelscope"])
    ap.add_argument("--served-model-name", help="model name for API clients (default: the directory's name)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to listen on all interfaces)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--api-key", action="append", default=[], metavar="KEY",
                    help="require 'Authorization: Bearer KEY' on /v1 (repeatable; also $M1_API_KEY)")
    ap.add_argument("--auth", action="append", default=[], metavar="USER:PASS", type=_user_pass,
                    help="studio login (repeatable)")
    ap.add_argument("--data-dir", default=str(ROOT / "data"), help="sessions database and uploads (default: data/)")
    ap.add_argument("--max-upload-mb", type=int, default=100, help="largest accepted upload")
    ap.add_argument("--share", action="store_true", help="public Gradio share link for the studio")
    ap.add_argument("--root-path", default="", help="URL prefix when served behind a reverse proxy")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    engine = ap.add_argument_group("engine")
    engine.add_argument("--backend", default="m1", choices=["m1", "transformers", "vllm"],
                        help="m1: our engine (state reuse, thinking budget); transformers / vllm: the seed's two "
                             "paths (pip install -r requirements-backends.txt)")
    engine.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs to split the model over")
    engine.add_argument("--quantization", default=None, help="experts_int8 (int8 MoE experts), or none")
    engine.add_argument("--max-model-len", type=int, default=None,
                        help="context window in tokens (default: the model's, 65,536 on CPU)")
    engine.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    engine.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    engine.add_argument("--enforce-eager", action="store_true",
                        help="no CUDA graphs for decode (they are captured at start-up by default on CUDA)")
    return ap.parse_args(argv)


def _user_pass(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError(f"--auth expects USER:PASS, got {value!r}")
    return user, password


def ensure_tiny_model(path: Path) -> None:
    """Write the tiny random-weights checkpoint at `path` if it is missing (atomically: safe to race)."""
    if (path / "config.json").is_file():
        return
    from engine.model.tiny import write_checkpoint
    print(f"writing the tiny random-weights demo model to {path} ...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".m1-tiny-", dir=path.parent))
    write_checkpoint(tmp, layout="official", seed=0)
    try:
        os.rename(tmp, path)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_checkpoint(model: str, source: str) -> str:
    """The local directory for --model: the tiny default (written if missing), a directory, or a hub download."""
    if Path(model).resolve() == DEFAULT_MODEL:
        ensure_tiny_model(DEFAULT_MODEL)
        return str(DEFAULT_MODEL)
    if Path(model).is_dir():
        return model
    from engine.model.sources import resolve_model
    return str(resolve_model(model, source=source))


def share_link(host: str, port: int, root_path: str, wait_s: float = 2.0) -> None:
    """--share: open a Gradio share tunnel to this server once it listens, and print its public URL."""
    import secrets

    from gradio import networking
    time.sleep(wait_s)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        url = networking.setup_tunnel(local, port, secrets.token_urlsafe(32), None, None)
        print(f"public share link (72 h): {url}{root_path}/", flush=True)
    except Exception as exc:  # noqa: BLE001 - the studio keeps serving locally
        print(f"could not create a share link: {exc}", flush=True)


def load_engine(args: argparse.Namespace):
    """LLMEngine + AsyncEngine, with weight-loading progress on the console."""
    from engine.serving.async_engine import AsyncEngine
    from engine.serving.llm_engine import EngineArgs, LLMEngine

    last, tty = [-1], sys.stdout.isatty()

    def progress(done: int, total: int, name: str) -> None:
        percent = 100 * done // max(total, 1)
        step = percent // (5 if tty else 25)
        if step != last[0] or done == total:
            last[0] = step
            print(f"{chr(13) if tty else ''}loading weights: {done}/{total} tensors ({percent}%)",
                  end="\n" if done == total or not tty else "", flush=True)

    start = time.perf_counter()
    dtype = None if args.dtype == "auto" else args.dtype
    if args.backend != "m1":
        return load_other_backend(args, dtype)
    llm = LLMEngine(args.model, device=args.device, dtype=dtype, args=EngineArgs(max_model_len=args.max_model_len,
                                                                        enforce_eager=args.enforce_eager),
                    progress=progress, tensor_parallel_size=args.tensor_parallel_size,
                    quantization=args.quantization)
    print(f"model loaded in {time.perf_counter() - start:.1f} s on {llm.device} ({str(llm.dtype).split('.')[-1]}), "
          f"context window {llm.max_model_len:,} tokens", flush=True)
    return AsyncEngine(llm)


def load_other_backend(args: argparse.Namespace, dtype):
    """The seed's transformers (quanto int8) or vLLM (experts_int8) path behind the studio's engine interface."""
    from engine.backends import make_backend
    from engine.backends.async_adapter import BackendAsyncEngine
    from engine.model.config import ModelConfig

    if args.backend == "transformers":
        import torch
        on_cpu = args.device == "cpu" or not torch.cuda.is_available()
        backend = make_backend("transformers", args.model, dtype=dtype or ("float32" if on_cpu else "bfloat16"),
                               quantize_int8=args.quantization is not None, device_map=None if on_cpu else "auto")
    else:
        backend = make_backend("vllm", args.model, tensor_parallel_size=args.tensor_parallel_size,
                               quantization=args.quantization, max_model_len=args.max_model_len)
    window = args.max_model_len or ModelConfig.from_dir(args.model).max_position_embeddings
    print(f"{args.backend} backend loaded (no state reuse across turns: that needs --backend m1)", flush=True)
    return BackendAsyncEngine(backend, window)


def main(argv=None) -> int:
    """Parse flags, load the model, serve until interrupted."""
    args = parse_args(argv)
    try:
        args.model = resolve_checkpoint(args.model, args.model_source)
    except Exception as exc:  # noqa: BLE001 - a missing path or a failed download ends here, said plainly
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from studio.server import ServerConfig, build_app
    from studio.store.store import SessionStore

    api_keys = args.api_key + ([os.environ["M1_API_KEY"]] if os.environ.get("M1_API_KEY") else [])
    config = ServerConfig(args.model, args.served_model_name, args.data_dir, api_keys, args.auth,
                          args.max_upload_mb, args.share, args.root_path)
    if config.model["random_weights"]:
        print(f"NOTE: {config.model['note']}", flush=True)
    try:
        engine = load_engine(args)
    except (ValueError, NotImplementedError, FileNotFoundError, MemoryError, ImportError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    config.uploads_dir.mkdir(parents=True, exist_ok=True)
    store = SessionStore(Path(args.data_dir) / "sessions.db")
    app = build_app(engine, store, config)
    url = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}{args.root_path}"
    print(f"M1 Studio: {url}/   API: {url}/v1   (model name: {config.model_name})", flush=True)
    if args.share:
        threading.Thread(target=share_link, args=(args.host, args.port, args.root_path), daemon=True).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, root_path=args.root_path, log_level=args.log_level)
    finally:
        engine.shutdown()
        engine.engine.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

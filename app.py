"""M1 Studio: the chat studio at /, an OpenAI-compatible API at /v1 and /health, on one port.

    python app.py                                   # tiny random-weights demo model, created on first run
    python app.py --model /models/MiniMax-M1-80k --port 8000 --api-key sk-local --auth alice:secret
    python app.py --replicas 2 --device cpu --state-dir /shared/m1-states   # engines on Ray Serve (engine.cluster)
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
    ap.add_argument("--model", default=None,
                    help="checkpoint directory or hub id (e.g. MiniMaxAI/MiniMax-M1-80k; default: the tiny "
                         "random-weights model, written to DATA_DIR/models/m1-tiny on first run)")
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
    ap.add_argument("--max-body-mb", type=float, default=8, help="largest request body other than uploads")
    ap.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                    help="let web pages on ORIGIN call the API from a browser (repeatable; default: none)")
    ap.add_argument("--rate-limit-api", default="600/minute", metavar="RATE",
                    help="API requests per client IP and per API key ('' = unlimited)")
    ap.add_argument("--rate-limit-login", default="10/minute", metavar="RATE",
                    help="login attempts per client IP and per user name")
    ap.add_argument("--rate-limit-share", default="60/minute", metavar="RATE", help="share-page views per client IP")
    ap.add_argument("--share", action="store_true", help="public Gradio share link for the studio")
    ap.add_argument("--root-path", default="", help="URL prefix when served behind a reverse proxy")
    ap.add_argument("--tools", default="", type=_tool_names, metavar="NAMES",
                    help="built-in tools the studio offers the model, comma-separated: calculator, documents")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--no-access-log", action="store_true", help="no log line per HTTP request")
    engine = ap.add_argument_group("engine")
    engine.add_argument("--backend", default="m1", choices=["m1", "transformers", "vllm"],
                        help="m1: our engine (state reuse, thinking budget); transformers / vllm: the seed's two "
                             "paths (pip install -r requirements-backends.txt)")
    engine.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs to split the model over")
    engine.add_argument("--quantization", default=None, help="experts_int8 (int8 MoE experts), or none")
    engine.add_argument("--max-model-len", type=int, default=None,
                        help="context window in tokens (default: the model's, 65,536 on CPU)")
    engine.add_argument("--kv-cache-tokens", type=int, default=None,
                        help="KV cache size in tokens (default: from free GPU memory; 2 windows on CPU)")
    engine.add_argument("--max-num-seqs", type=int, default=32, help="requests run at once (more wait)")
    engine.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    engine.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    engine.add_argument("--enforce-eager", action="store_true",
                        help="no CUDA graphs for decode (they are captured at start-up by default on CUDA)")
    engine.add_argument("--state-disk-gb", type=float, default=8.0,
                        help="disk tier of the saved model states, under DATA_DIR/states, kept across restarts "
                             "(size cap in GB; 0 disables it)")
    engine.add_argument("--state-dir", default=None,
                        help="also save session states here (storage every replica reads): a session that moves to "
                             "another replica, or comes back after a restart, restores instead of re-reading")
    cluster = ap.add_argument_group("replicas (Ray Serve; without --replicas the engine runs in this process)")
    cluster.add_argument("--replicas", type=int, default=0, help="engine replicas, each a whole engine")
    cluster.add_argument("--gpus-per-replica", type=float, default=None,
                         help="GPUs per replica (default: the tensor-parallel size; 0 with --device cpu)")
    cluster.add_argument("--cpus-per-replica", type=float, default=1.0)
    cluster.add_argument("--ray-address", default=None,
                         help="join this Ray cluster (e.g. auto, or head:6379) instead of starting a local one; "
                              "without --replicas, attach to the engine replicas it already runs (a RayService)")
    args = ap.parse_args(argv)
    if (args.replicas or args.ray_address) and args.backend != "m1":
        ap.error("--replicas runs our engine (--backend m1)")
    return args


def _tool_names(value: str) -> list[str]:
    from studio.tools.toolbox import AVAILABLE
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in AVAILABLE]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown tool(s) {', '.join(unknown)}; available: {', '.join(AVAILABLE)}")
    return names


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


def resolve_checkpoint(model: str | None, source: str, data_dir: str = str(ROOT / "data")) -> str:
    """The local directory for --model: the tiny default (written under data_dir if missing), a directory, or a hub
    download."""
    if model is None or Path(model).resolve() == DEFAULT_MODEL:
        tiny = Path(data_dir).resolve() / "models" / "m1-tiny"
        ensure_tiny_model(tiny)
        return str(tiny)
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
    if args.replicas or args.ray_address:
        return load_replicas(args, dtype, engine_args(args, replicas=True))
    llm = LLMEngine(args.model, device=args.device, dtype=dtype, args=EngineArgs(**engine_args(args)),
                    progress=progress, tensor_parallel_size=args.tensor_parallel_size,
                    quantization=args.quantization)
    print(f"model loaded in {time.perf_counter() - start:.1f} s on {llm.device} ({str(llm.dtype).split('.')[-1]}), "
          f"context window {llm.max_model_len:,} tokens", flush=True)
    if llm.states_refused:
        print(f"saved model states in {llm.args.disk_state_dir} refused: {llm.states_refused}", flush=True)
    elif llm.args.disk_state_bytes:
        print(f"saved model states: {llm.states_restored} restored from {llm.args.disk_state_dir}", flush=True)
    return AsyncEngine(llm, on_fatal=exit_soon)


def exit_soon(error: BaseException, grace_s: float = 2.0) -> None:
    """The engine loop cannot continue: the waiters were told; exit non-zero (3) for a supervisor to restart."""
    print(f"fatal: the engine stopped ({type(error).__name__}: {error}); exiting with status 3", file=sys.stderr,
          flush=True)
    threading.Timer(grace_s, os._exit, (3,)).start()


def load_replicas(args: argparse.Namespace, dtype, engine_args: dict):
    """--replicas N: N engines on Ray Serve (a local cluster, or --ray-address), behind the same interface."""
    from engine.cluster.launch import start_replicas

    gpus = args.gpus_per_replica
    if gpus is None:
        gpus = 0 if args.device == "cpu" else args.tensor_parallel_size
    start = time.perf_counter()
    engine = start_replicas(args.model, replicas=args.replicas, gpus_per_replica=gpus,
                            cpus_per_replica=args.cpus_per_replica, ray_address=args.ray_address,
                            engine={"device": args.device, "dtype": dtype, "quantization": args.quantization,
                                    "tensor_parallel_size": args.tensor_parallel_size}, engine_args=engine_args)
    print(f"{len(engine.live_replicas())} engine replicas ready in {time.perf_counter() - start:.1f} s ({gpus:g} GPUs each, "
          f"{engine.device}), context window {engine.engine.max_model_len:,} tokens", flush=True)
    return engine


def engine_args(args: argparse.Namespace, replicas: bool = False) -> dict:
    """EngineArgs fields from the flags: the window and pools, the disk tier of saved states under --data-dir
    (--state-disk-gb; replicas share --state-dir instead), and the shared state dir."""
    disk_bytes = 0 if replicas else int(max(args.state_disk_gb, 0) * (1 << 30))
    return {"max_model_len": args.max_model_len, "kv_cache_tokens": args.kv_cache_tokens,
            "max_num_seqs": args.max_num_seqs, "shared_state_dir": args.state_dir, "disk_state_bytes": disk_bytes,
            "enforce_eager": args.enforce_eager,
            "disk_state_dir": str(Path(args.data_dir) / "states") if disk_bytes else None}


def access_log_config(app_level: str) -> dict:
    """uvicorn's logging at the app's --log-level, with one access line per request (uvicorn.access at INFO)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.access"]["level"] = "INFO"
    config["loggers"]["uvicorn.error"] = {"level": app_level.upper()}
    return config


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
        args.model = resolve_checkpoint(args.model, args.model_source, args.data_dir)
    except Exception as exc:  # noqa: BLE001 - a missing path or a failed download ends here, said plainly
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from studio.server import ServerConfig, build_app
    from studio.store.data_lock import DataDirLock, DataDirLocked
    from studio.store.store import SessionStore

    api_keys = args.api_key + ([os.environ["M1_API_KEY"]] if os.environ.get("M1_API_KEY") else [])
    config = ServerConfig(args.model, args.served_model_name, args.data_dir, api_keys, args.auth,
                          args.max_upload_mb, args.share, args.root_path, args.tools, args.max_body_mb,
                          args.cors_origin, args.rate_limit_api, args.rate_limit_login, args.rate_limit_share)
    try:
        data_lock = DataDirLock(args.data_dir).acquire()  # before the model loads: a second process ends at once
    except DataDirLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    interrupted = store.mark_interrupted()  # replies a dead process left streaming (this one holds the lock)
    if interrupted:
        print(f"{interrupted} reply(s) left streaming by a stopped server marked interrupted", flush=True)
    app = build_app(engine, store, config)
    close = closer(engine, store, data_lock)
    close_on_shutdown(app, close)  # uvicorn re-raises SIGTERM after its shutdown: `finally` alone never ran
    url = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}{args.root_path}"
    print(f"M1 Studio: {url}/   API: {url}/v1   (model name: {config.model_name})", flush=True)
    if args.share:
        threading.Thread(target=share_link, args=(args.host, args.port, args.root_path), daemon=True).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, root_path=args.root_path, log_level=None,
                    access_log=not args.no_access_log, log_config=access_log_config(args.log_level))
    finally:
        close()
    return 0


def close_on_shutdown(app, close) -> None:
    """Run close() when the app's lifespan ends (uvicorn's graceful shutdown, e.g. on SIGTERM)."""
    import contextlib

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(scope_app):
        async with inner(scope_app) as state:
            yield state
        close()
    app.router.lifespan_context = lifespan


def closer(engine, store, data_lock):
    """Stop the engine (its disk tier saves the kept states), then close the store; runs once however called."""
    done = []

    def close() -> None:
        if done:
            return
        done.append(True)
        engine.shutdown()
        if hasattr(engine.engine, "close"):
            engine.engine.close()
        store.close()
        data_lock.release()
        print("M1 Studio stopped: engine and store closed", flush=True)
    return close


if __name__ == "__main__":
    sys.exit(main())

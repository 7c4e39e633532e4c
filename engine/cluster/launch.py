"""Start engine replicas on Ray Serve (a local Ray cluster, or one joined by address) and return their client.

    engine = start_replicas("data/models/m1-tiny", replicas=2, engine={"device": "cpu"})   # a ReplicaEngine
    ...
    engine.shutdown()            # deletes the Serve app it deployed; stops Ray too when this process started it

Joining a cluster whose Serve app is already running (a KubeRay RayService declares it with `build_app` below, see
deploy/), the client attaches to that app instead of deploying one.

Each replica is one `EngineReplica` actor with `gpus_per_replica` GPUs (its tensor-parallel size; 0 for a CPU
engine) and the session-affinity request router; no Serve HTTP proxy is started (the studio's own server is the
ingress and talks to the replicas through a DeploymentHandle). Worker processes find this repository through
PYTHONPATH (on a cluster, the image must hold the code at the same path: see deploy/).
"""
import logging
import os
from pathlib import Path

from ..text.tokenizer import load_tokenizer
from .client import ReplicaEngine
from .replica import EngineReplica
from .router import SessionAffinityRouter

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "m1-engine"
DEPLOYMENT = "EngineReplica"


def engine_deployment(replicas: int, gpus_per_replica: float, cpus_per_replica: float, max_ongoing: int):
    """The Serve deployment of EngineReplica (not yet bound to its arguments)."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig
    return serve.deployment(EngineReplica, name=DEPLOYMENT, num_replicas=replicas, max_ongoing_requests=max_ongoing,
                            ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica},
                            request_router_config=RequestRouterConfig(request_router_class=SessionAffinityRouter),
                            health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5)


def start_replicas(model: str, *, replicas: int, gpus_per_replica: float = 0, cpus_per_replica: float = 1,
                   engine: dict | None = None, engine_args: dict | None = None, ray_address: str | None = None,
                   torch_threads: int | None = None, max_ongoing: int | None = None,
                   app_name: str = APP_NAME) -> ReplicaEngine:
    """Deploy `replicas` engines of `model` (LLMEngine keyword `engine`, EngineArgs fields `engine_args`) and
    return a ReplicaEngine on them. Blocks until every replica has loaded its model. `replicas=0` on a joined
    cluster attaches to the app it runs (waiting for it to be up)."""
    import ray
    from ray import serve

    engine, engine_args = dict(engine or {}), dict(engine_args or {})
    owns_ray = not ray.is_initialized() and ray_address is None
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(address=ray_address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}},
                 **({"num_cpus": max(os.cpu_count() or 1, int(replicas * cpus_per_replica) + 1)} if owns_ray else {}))
    attach = not owns_ray and (replicas == 0 or app_name in serve.status().applications)
    if attach:  # declared by the cluster (RayService): use it as it is
        wait_for_app(app_name)
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name)
    else:
        serve.start(proxy_location="Disabled")
        slots = max_ongoing or engine_args.get("max_num_seqs", 32)
        deployment = engine_deployment(replicas, gpus_per_replica, cpus_per_replica, slots)
        handle = serve.run(deployment.bind(model, engine, engine_args, torch_threads), name=app_name, route_prefix=None)

    def stop() -> None:
        if not attach:
            serve.delete(app_name)
        if owns_ray:
            serve.shutdown()
            ray.shutdown()

    return ReplicaEngine(handle, load_tokenizer(model), app_name=app_name, deployment=DEPLOYMENT, on_shutdown=stop)


def wait_for_app(app_name: str, timeout_s: float = 3600, poll_s: float = 5) -> None:
    """Block until the Serve app `app_name` is RUNNING (a RayService deploys it once its cluster is up)."""
    import time

    from ray import serve
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Serve app {app_name!r} is not running after {timeout_s:.0f} s "
                               f"(status: {app.status if app else 'absent'})")
        time.sleep(poll_s)


def build_app(args: dict):
    """Serve application builder for a declarative deployment (`serveConfigV2` import_path
    `engine.cluster.launch:build_app`): args `model`, `replicas`, `gpus_per_replica`, `cpus_per_replica`,
    `engine` (LLMEngine keywords), `engine_args` (EngineArgs fields)."""
    engine_args = dict(args.get("engine_args") or {})
    deployment = engine_deployment(int(args["replicas"]), float(args.get("gpus_per_replica", 8)),
                                   float(args.get("cpus_per_replica", 8)), int(engine_args.get("max_num_seqs", 32)))
    return deployment.bind(args["model"], dict(args.get("engine") or {}), engine_args, None)

"""The one FastAPI app of M1 Studio: the studio page at `/`, the OpenAI-compatible API at `/v1`, `/health`.

    app = build_app(async_engine, store, ServerConfig(model_dir="data/models/m1-tiny"))

`mount_ui` puts the studio at `/` (studio.ui.ui: `gr.mount_gradio_app(app, blocks, path="/", auth=...)`); it is
called last so /v1 and /health keep precedence.
"""
import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from studio.api import OpenAIService, create_router
from studio.chat import ChatService
from studio.guard import GuardConfig, RequestGuard
from studio.model_info import model_info
from studio.tools.toolbox import ToolBox


@dataclass
class ServerConfig:
    """Everything the app needs besides the engine and the store (app.py fills it from its flags)."""
    model_dir: str
    served_model_name: str | None = None
    data_dir: str = "data"
    api_keys: list[str] = field(default_factory=list)
    auth: list[tuple[str, str]] = field(default_factory=list)  # studio logins (USER, PASS), for the UI
    max_upload_mb: int = 100
    share: bool = False
    root_path: str = ""
    tools: list[str] = field(default_factory=list)  # built-in studio tools (studio.tools): calculator, documents
    max_body_mb: float = 8  # request bodies other than uploads (the API's JSON)
    cors_origins: list[str] = field(default_factory=list)  # none: browsers on other sites cannot read /v1
    api_rate: str = "600/minute"  # per client IP and per API key ("" = no limit)
    login_rate: str = "10/minute"  # per client IP and per user name
    share_rate: str = "60/minute"  # share pages, per client IP

    @property
    def guard(self) -> GuardConfig:
        """The request guard's limits (studio.guard)."""
        return GuardConfig(int(self.max_body_mb * 2**20), (self.max_upload_mb + 1) * 2**20, self.api_rate,
                           self.login_rate, self.share_rate)

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded files are kept."""
        return Path(self.data_dir) / "uploads"

    @property
    def model(self) -> dict:
        """model_info of the served checkpoint (name, random_weights, note)."""
        return model_info(self.model_dir)

    @property
    def model_name(self) -> str:
        """The name clients use in `model` (default: the checkpoint directory's name)."""
        return self.served_model_name or self.model["name"]


def build_app(async_engine, store, config: ServerConfig) -> FastAPI:
    """The app: /v1 (OpenAI API), /health, and the studio at / (mount_ui). State on app.state: engine, store,
    chat (ChatService), config."""
    app = FastAPI(title="M1 Studio", docs_url=None, redoc_url=None, openapi_url=None)  # docs: /v1/docs, keyed
    add_guards(app, config)
    app.state.engine, app.state.store, app.state.config = async_engine, store, config
    app.state.chat = chat = ChatService(async_engine, store, toolbox=ToolBox(config.tools))
    app.include_router(create_router(OpenAIService(async_engine, config.model_name, config.api_keys)), prefix="/v1")
    info = config.model

    @app.get("/health")
    async def health():
        state = engine_health(async_engine)
        body = {"status": "ok" if state["alive"] else "engine_dead", "model": config.model_name,
                "random_weights": info["random_weights"], "max_model_len": chat.window, **state}
        if hasattr(async_engine, "replicas"):  # multi-replica mode (engine.cluster): alive, sessions per replica
            replicas = await asyncio.to_thread(async_engine.replicas)
            body["replicas"] = {"alive": sum(r["alive"] for r in replicas), "per_replica": replicas}
        return JSONResponse(body, status_code=200 if state["alive"] else 503)

    mount_ui(app, chat, config)
    return app


def add_guards(app: FastAPI, config: ServerConfig) -> None:
    """Body-size, content-type and rate limits on every route; CORS only for the origins configured."""
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(RequestGuard, config=config.guard)


def engine_health(async_engine) -> dict:
    """The engine's state without waiting on its thread (answers during a long prefill); 503 when dead."""
    if hasattr(async_engine, "health"):
        return async_engine.health()
    return {"alive": True, "error": None, "running_requests": len(async_engine.engine.requests)}


def mount_ui(app: FastAPI, chat: ChatService, config: ServerConfig) -> None:
    """The studio at `/`: the Gradio page, the read-only share route and the login (studio.ui.mount_ui)."""
    from studio.ui.ui import mount_ui as mount_studio
    mount_studio(app, chat, config)

"""OpenAI-compatible API (mounted at /v1): `GET /models`, `POST /chat/completions` (streaming or not).

Stateless like OpenAI, but on the shared engine: a client that resends a conversation with a new turn gets the
earlier turns' state back from the engine (usage.prompt_tokens_details.cached_tokens). Streamed chunks carry
the thinking in `delta.reasoning_content` and the answer in `delta.content`; a client that disconnects aborts
its request. With several engine replicas (app.py --replicas) a conversation's turns reach the replica holding its
state when they carry a session: the `user` field or an `X-Session-Id` header (the header wins); the replica is
named in `system_fingerprint` ("replica-<id>"). With API keys configured every /v1 call needs
`Authorization: Bearer <key>` (401 otherwise).
"""
import asyncio
import json
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from studio.api_reply import ReplyParser
from studio.api_request import APIError, CompletionRequest, parse_request
from studio.api_tools import forced_output, parse_tools
from studio.generation import Generation
from studio.prompt import PromptEncoder


class OpenAIService:
    """What the routes need: the engine, the served model name, the window and the accepted keys."""

    def __init__(self, async_engine, model_name: str, api_keys=()):
        self.engine = async_engine
        self.model_name = model_name
        self.api_keys = [k for k in api_keys if k]
        self.window = async_engine.engine.max_model_len
        self.encoder = PromptEncoder(async_engine.tokenizer)  # resent long conversations are not re-tokenized
        self._grammars, self._grammars_lock = None, threading.Lock()
        # the grammar compiler reads the whole vocabulary once (~15 s for M1's 200k ids): not on a client's time
        threading.Thread(target=self._warm_grammars, name="grammar-warmup", daemon=True).start()

    def check_key(self, request: Request) -> None:
        """Raise APIError 401 unless the request carries one of the configured keys (none configured: open)."""
        if not self.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "Missing API key: send it as 'Authorization: Bearer <key>'", code="invalid_api_key")
        if not any(secrets.compare_digest(key.strip().encode(), k.encode()) for k in self.api_keys):
            raise APIError(401, "Incorrect API key provided", code="invalid_api_key")

    def models(self) -> dict:
        """The model list."""
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                            "owned_by": "m1-studio", "max_model_len": self.window}]}

    def parse(self, raw: bytes, session_header: str | None = None) -> CompletionRequest:
        """A request body to a validated request with its tools and grammar (JSON, tokenisation and grammar
        compilation: run it off the event loop). The X-Session-Id header wins over the body's `user`."""
        body = parse_body(raw)
        req = parse_request(body, model_names=[self.model_name], tokenizer=self.encoder, window=self.window)
        req.session_id = session_header or req.session_id
        self.add_tools(req, body)
        return req

    def generation(self, req: CompletionRequest) -> Generation:
        """A Generation for a parsed request."""
        return Generation(self.engine, req.prompt_ids, req.params, keep_at=req.keep_at,
                          starts_in_reasoning=req.force_think_start, thinking_budget=req.thinking_budget,
                          session_id=req.session_id, forced_output=req.forced_output)

    def add_tools(self, req: CompletionRequest, body: dict) -> None:
        """Tools, tool_choice, response_format and force_output of the body onto a parsed request (APIError 400)."""
        req.tools = parse_tools(body)
        req.forced_output = forced_output(body.get("force_output"), self.engine.tokenizer)
        structure = req.tools.structure(req.force_think_start)
        if structure is not None:
            from engine.serving.grammar import GrammarError  # xgrammar loads with the first constrained request
            try:
                req.params.constraint = self.grammars().constraint(structure)
            except GrammarError as exc:
                raise APIError(400, f"{exc}", param="response_format" if req.tools.json_schema else "tools") from None

    def _warm_grammars(self) -> None:
        try:
            self.grammars()
        except Exception:  # noqa: BLE001 - the first constrained request will report it
            pass

    def grammars(self):
        """The grammar compiler for the served tokenizer (built on first use)."""
        with self._grammars_lock:
            if self._grammars is None:
                from engine.serving.grammar import Grammars
                config = getattr(self.engine.engine, "config", None)
                vocab = config.vocab_size if config is not None else self.engine.tokenizer.vocab_size
                self._grammars = Grammars(self.engine.tokenizer, vocab)
        return self._grammars

    async def complete(self, req: CompletionRequest) -> dict:
        """A whole chat.completion object."""
        generation, final = self.generation(req), None
        async for event in generation.events():
            final = event if event.kind in ("done", "error") else final
        if final.kind == "error":
            raise APIError(500, final.text, type="server_error", code="engine_error")
        reply = ReplyParser(req.tools)
        reply.feed(generation.answer)
        reply.finish()
        return {**self._head("chat.completion"), **_fingerprint(final.stats), "choices": [
            {"index": 0, "message": reply.message(generation.reasoning), "logprobs": None,
             "finish_reason": reply.finish_reason(final.stats)}], "usage": usage(final.stats)}

    async def stream(self, req: CompletionRequest):
        """chat.completion.chunk dicts as SSE data, then "[DONE]"; an engine error becomes an error object."""
        head = self._head("chat.completion.chunk")
        extra = {"usage": None} if req.include_usage else {}

        def chunk(delta: dict, finish_reason=None) -> dict:
            return {"data": _json({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                        "finish_reason": finish_reason}], **extra})}

        yield chunk({"role": "assistant", "content": ""})
        reply = ReplyParser(req.tools)
        async for event in self.generation(req).events():
            if event.kind == "reasoning":
                yield chunk({"reasoning_content": event.text})
            elif event.kind == "answer":
                for delta in reply.feed(event.text):
                    yield chunk(delta)
            elif event.kind == "error":
                yield {"data": _json(APIError(500, event.text, type="server_error", code="engine_error").body())}
            elif event.kind == "done":
                head.update(_fingerprint(event.stats))  # the last chunks name the replica that served the turn
                for delta in reply.finish():
                    yield chunk(delta)
                yield chunk({}, reply.finish_reason(event.stats))
                if req.include_usage:
                    yield {"data": _json({**head, "choices": [], "usage": usage(event.stats)})}
        yield {"data": "[DONE]"}

    def _head(self, kind: str) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                "model": self.model_name}


def usage(stats: dict) -> dict:
    """OpenAI usage from the generation stats (cached = prompt tokens whose state the engine reused)."""
    prompt, completion = stats["prompt_tokens"], stats["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": stats.get("cached_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens": stats.get("reasoning_tokens") or 0}}


def _fingerprint(stats: dict) -> dict:
    """`system_fingerprint` names the engine replica that served the request (multi-replica mode only)."""
    return {"system_fingerprint": f"replica-{stats['replica']}"} if stats and stats.get("replica") else {}


def _json(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def _unless_disconnected(request: Request, work, poll_s: float = 0.5):
    """Await `work`; cancel it (which aborts its engine request) if the client goes away first."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=poll_s)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            raise APIError(499, "the client closed the connection", code="client_closed_request")
    return task.result()


def create_router(service: OpenAIService) -> APIRouter:
    """The /v1 routes (include it with prefix="/v1")."""
    router = APIRouter()

    @router.get("/models")
    async def list_models(request: Request):
        try:
            service.check_key(request)
        except APIError as exc:
            return exc.response()
        return service.models()

    @router.get("/models/{model_id}")
    async def get_model(model_id: str, request: Request):
        try:
            service.check_key(request)
            if model_id != service.model_name:
                raise APIError(404, f"The model `{model_id}` does not exist", param="model", code="model_not_found")
        except APIError as exc:
            return exc.response()
        return service.models()["data"][0]

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        try:
            service.check_key(request)
            raw = await request.body()
            req = await asyncio.get_running_loop().run_in_executor(PARSER, service.parse, raw,
                                                                   request.headers.get("x-session-id"))
            if req.stream:
                return EventSourceResponse(service.stream(req), ping=15)
            return JSONResponse(await _unless_disconnected(request, service.complete(req)))
        except APIError as exc:
            return exc.response()
        except Exception as exc:  # noqa: BLE001 - any other failure is a 500 in OpenAI's shape
            return APIError(500, f"internal error: {exc}", type="server_error").response()

    add_docs_routes(router, service)
    add_fallback_route(router)
    return router


# --- hardening: parsing off the event loop, docs behind the key, OpenAI-shaped 404/405 -----------------------
PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m1-api-parse")  # one thread: the encoder's memo


def parse_body(raw: bytes):
    """JSON from a request body; APIError 400 for invalid or too deeply nested JSON (RecursionError)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise APIError(400, "the request body is not valid JSON (or is nested too deeply)") from None


def add_docs_routes(router: APIRouter, service: OpenAIService) -> None:
    """/v1/openapi.json and /v1/docs, behind the API key like every /v1 route."""

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        try:
            service.check_key(request)
        except APIError as exc:
            return exc.response()
        return JSONResponse(request.app.openapi())

    @router.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        try:
            service.check_key(request)
        except APIError as exc:
            return exc.response()
        return get_swagger_ui_html(openapi_url=request.scope.get("root_path", "") + "/v1/openapi.json",
                                   title="M1 Studio API")


def add_fallback_route(router: APIRouter) -> None:
    """Every other /v1 path: 405 where the path exists with other methods, else 404; both in OpenAI's shape.
    (Without it, unknown /v1 paths fell through to the studio mounted at /.)"""
    known = list(router.routes)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]

    @router.api_route("", methods=methods, include_in_schema=False)
    @router.api_route("/{path:path}", methods=methods, include_in_schema=False)
    async def fallback(request: Request, path: str = ""):
        full = "/" + path
        allowed = sorted({m for r in known if r.path_regex.match(full) for m in getattr(r, "methods", ())})
        if allowed:
            return APIError(405, f"{request.method} is not allowed on /v1{full}; use {', '.join(allowed)}",
                            code="method_not_allowed").response()
        return APIError(404, f"Unknown request URL: {request.method} /v1{full}. Please check the URL.",
                        code="unknown_url").response()

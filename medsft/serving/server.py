"""An OpenAI-compatible HTTP server for a run or a model: /v1/completions, /v1/chat/completions, /v1/models,
/metrics (Prometheus), /health and a self-contained web page at /.

A body over `max_body_bytes` is refused (413) before it is read; each route hands its request to the pipeline
(pipeline.py: validate, tokenize, admit, stream or collect) and generation runs in `engine.Engine`. With an API
key, every endpoint but /health and the page wants `Authorization: Bearer KEY`. Nothing a client sends produces a
5xx, and the server's own failures are never a 4xx: /health answers 503 while the generation worker is down.
"""

from __future__ import annotations

import hmac
import html
import json
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsft.serving.engine import Engine
from medsft.models import adapters
from medsft.models.inference import Loaded
from medsft.serving.pipeline import Pipeline, ServeOptions
from medsft.serving.openai_api import ApiError, ChatRequest, CompletionRequest, validation_error
from medsft.serving.body_limit import BodyLimit
from medsft.serving.prometheus import Metrics

PAGE = Path(__file__).with_name("page.html")


def _errors(app: FastAPI) -> None:
    """Every error as OpenAI's error body, with the status that says whose it is."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):  # unknown paths, methods, undecodable bodies
        return ApiError(e.status_code, str(e.detail), "body" if e.status_code == 400 else None,
                        headers=getattr(e, "headers", None)).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return validation_error(e.errors()).response()


def _guard(api_key: str | None):
    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", None, "invalid_api_key")

    return [Depends(authorized)]


def _generation_routes(app: FastAPI, pipeline: Pipeline, guard) -> None:
    @app.post("/v1/completions", dependencies=guard)
    async def completions(req: CompletionRequest, request: Request):
        max_tokens = pipeline.max_tokens(req)
        ids = await pipeline.text_ids(req.prompt_ids() or (req.prompt if isinstance(req.prompt, str) else req.prompt[0]))
        return await pipeline.respond(request, req, ids, max_tokens, chat=False)

    if getattr(pipeline.tokenizer, "chat_template", None):
        @app.post("/v1/chat/completions", dependencies=guard)
        async def chat_completions(req: ChatRequest, request: Request):
            max_tokens = pipeline.max_tokens(req)
            ids = await pipeline.chat_ids(req.conversation(), req.chat_template_kwargs)
            return await pipeline.respond(request, req, ids, max_tokens, chat=True)


def _service_routes(app: FastAPI, engine: Engine, metrics: Metrics, models: dict[str, str | None], guard) -> None:
    served = next(iter(models))
    root = next((name for name, adapter in models.items() if adapter == adapters.BASE_ADAPTER), served)

    @app.get("/v1/models", dependencies=guard)
    async def list_models():  # as vLLM lists its LoRA modules: each adapter's parent is the base it runs on
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "medsft", "root": root,
             "parent": None if name == root else root} for name in models]}

    @app.get("/metrics", dependencies=guard)
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/health")
    async def health():
        body = {"status": "ok" if engine.alive() else "unavailable", "model": served, "models": list(models), "queue": engine.depth(),
                "restarts": engine.restarts}
        return JSONResponse(body, status_code=200 if engine.alive() else 503)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        names = json.dumps(list(models)).replace("<", "\\u003c")  # a folder's name cannot close the script
        return PAGE.read_text().replace("{{MODEL}}", html.escape(served)).replace("{{MODELS}}", names)


def create_app(loaded: Loaded, options: ServeOptions | None = None, extra: list[tuple[str, Path]] | None = None) -> FastAPI:
    """The app serving `loaded` under its folder's name (and, for a LoRA run, as `base`), with the `extra` adapters
    (name, folder) loaded beside it."""
    options = options or ServeOptions()
    app = FastAPI(title="medsft", docs_url=None, redoc_url=None)
    models = adapters.served(loaded, Path(loaded.name).name or loaded.name, extra or [])
    engine = Engine(loaded.model, loaded.tokenizer, options.max_batch, options.max_queue,
                    mixed_adapters=adapters.mixed_batches(loaded.model))
    metrics = Metrics(engine)
    app.state.engine, app.state.models = engine, list(models)
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes, on_response=metrics.count)
    _errors(app)
    guard = _guard(options.api_key)
    _generation_routes(app, Pipeline(loaded, options, engine, metrics, models), guard)
    _service_routes(app, engine, metrics, models, guard)
    return app

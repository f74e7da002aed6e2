"""The aggregator's FastAPI application: routers, error mapping, the background clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from he_agg.api.models import CommitmentIn, EpochRequest, FederationCreate, RoundOpen
from he_agg.challenge_compiled import one_blas_thread
from he_agg.errors import HeAggError, ServiceError, SignatureError, StoreError
from he_agg.memory import release_free_memory, tune_allocator
from he_agg.packed_sum import warm
from he_agg.params import DEFAULT
from he_agg.server import metrics
from he_agg.server.collector import collect
from he_agg.server.config import Settings
from he_agg.server.deps import AppState
from he_agg.server.logs import configure_logging
from he_agg.server.routes import decryption, federations, health, keygen, model, rounds, uploads
from he_agg.server.store import FileBlobStore, open_store

__all__ = ["create_app"]

log = logging.getLogger("he_agg.server")


def _state(settings: Settings) -> AppState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.database_url)
    blobs = FileBlobStore(settings.blob_root, settings.replica)
    blobs.clean_scratch()  # no request of this replica is in progress yet (others' are kept)
    collect(store, blobs, time.time(), settings.collect_grace)
    return AppState.build(settings, store, blobs)


def _error(request: Request, status: int, detail: str) -> JSONResponse:
    """The one error response; a refused request (4xx) is one INFO log line."""
    metrics.REJECTED.labels(status=str(status)).inc()
    if status < 500:
        log.info(
            "request refused",
            extra={
                "method": request.method,
                "path": request.url.path,
                "status": status,
                "detail": detail[:300],
            },
        )
    return JSONResponse(status_code=status, content={"detail": detail})


def _validation_detail(errors: Sequence[Any]) -> str:
    """pydantic's errors as "field.path: message; …" (no empty location for body-level ones)."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error becomes one JSON ``detail`` with its status; no traceback ever leaves."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        response = _error(request, exc.status, exc.detail)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(SignatureError)
    async def signature_error(request: Request, exc: SignatureError) -> JSONResponse:
        return _error(request, 401, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("storage failed", extra={"path": request.url.path, "error": str(exc)})
        return _error(request, 503, "storage is unavailable; try again later")

    @app.exception_handler(HeAggError)
    async def he_agg_error(request: Request, exc: HeAggError) -> JSONResponse:
        return _error(request, 422, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(request, 422, _validation_detail(exc.errors()))

    @app.exception_handler(ValidationError)
    async def body_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return _error(request, 422, _validation_detail(exc.errors()))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        """The client went away mid-request: one INFO line, no traceback, not a 5xx."""
        log.info("client disconnected", extra={"path": request.url.path})
        metrics.REJECTED.labels(status="disconnected").inc()
        return JSONResponse(status_code=400, content={"detail": "client disconnected"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"path": request.url.path})
        return _error(request, 500, "internal error; the server log has the details")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    tune_allocator()
    one_blas_thread()  # verifications run on the request threads (he_agg.challenge_compiled)
    state = _state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def clock() -> None:
            collected = shared = time.monotonic()
            quiet = False
            while True:
                await asyncio.sleep(settings.tick_seconds)
                try:
                    await run_in_threadpool(state.rounds.tick, time.time())
                    await run_in_threadpool(
                        state.store.prune_nonces, time.time() - 2 * settings.max_skew_seconds
                    )
                    if time.monotonic() - collected >= settings.collect_seconds:
                        collected = time.monotonic()
                        await run_in_threadpool(
                            collect, state.store, state.blobs, time.time(), settings.collect_grace
                        )
                    if (
                        settings.partial_seconds is not None
                        and time.monotonic() - shared >= settings.partial_seconds
                    ):
                        shared = time.monotonic()
                        await run_in_threadpool(state.rounds.sums.share)
                    if state.admission.uploads:
                        quiet = False
                    elif not quiet:  # the first tick after a load: free pages go back
                        quiet = True
                        await run_in_threadpool(release_free_memory)
                except Exception:  # the clock must survive any one bad round
                    log.exception("clock tick failed")

        # every admitted upload may hold a worker thread (validation waits for one of
        # validation_slots there); keep 32 more for everything else, so signed routes and
        # the clock never queue behind uploads
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.max_inflight_uploads + 32)
        state.changes.attach(asyncio.get_running_loop())
        task = asyncio.create_task(clock())
        log.info("aggregator started", extra={"data_dir": str(settings.data_dir)})
        primes = {q for f in state.federations.encrypted() for q in f.params.data_primes}
        primes.update(DEFAULT.data_primes)  # compiled now, not inside the first uploads
        threading.Thread(target=warm, args=(primes,), name="warm-kernels", daemon=True).start()
        for federation in state.federations.without_proofs():
            log.warning(
                "federation without proofs of well-formed uploads: one client colluding with "
                "this server can extract the collective key (SECURITY.md); use only for "
                "benchmarks or trusted clients",
                extra={"federation": federation},
            )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.store.close()

    app = FastAPI(
        title="he-agg aggregator",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN
        redoc_url=None,
    )
    app.state.he_agg = state
    for module in (health, federations, keygen, rounds, uploads, decryption, model):
        app.include_router(module.router)

    _install_error_handlers(app)
    _install_openapi(app)
    _install_docs(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs with its assets from the swagger-ui-bundle package, so the page
    works on a machine without internet access."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(
        "/docs-assets",
        StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


# Request bodies the routes parse themselves (they must see the signed bytes first): their
# schemas are named in the routes' openapi_extra and defined here.
_BODY_MODELS = (FederationCreate, RoundOpen, CommitmentIn, EpochRequest)
SIGNATURE_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "x-he-agg-signature",
    "description": "Ed25519 over the canonical request (he_agg.request_signing, version 2): "
    "method, target, the body's sha256 (x-he-agg-content-sha256) and length "
    "(x-he-agg-content-length), x-he-agg-timestamp, x-he-agg-nonce and x-he-agg-manifest; "
    "the signer's public key in x-he-agg-key. Checked before the body is read. A stale "
    "timestamp or a reused nonce is 401, a key not enrolled or a route outside the "
    "caller's role 403, a body that differs from its signed digest or length 400.",
}


_PROBLEM = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "what was wrong, for people"}},
    "required": ["detail"],
}
_STATUSES = {
    "400": "a body that differs from its signed sha256 or length, or a client that "
    "disconnected before its body arrived",
    "401": "unsigned, badly signed, stale (clock skew) or replayed (nonce) request",
    "403": "a route outside the caller's role, or another party's resource",
    "404": "no such federation, round, epoch, member or upload",
    "409": "the resource is not in a state that takes this request (see detail)",
    "422": "the body or a parameter is malformed or fails a check (see detail)",
    "503": "storage unavailable, or the server is busy (Retry-After)",
}
_BODY_STATUSES = {  # every route that reads a body
    "408": "the body stalled or arrived below the minimum rate",
    "413": "the body is larger than the caller's role and this federation allow",
}


def _document_statuses(operation: dict[str, Any], method: str, path: str) -> None:
    """Every error status a signed route can answer, each with the one JSON ``detail``."""
    codes = dict(_STATUSES)
    if method in ("put", "post"):
        codes |= _BODY_STATUSES
    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses = operation.setdefault("responses", {})
    for code, description in codes.items():
        documented = responses.setdefault(code, {"description": description})
        if documented["description"] == "Validation Error":  # FastAPI's own
            documented["description"] = description
        # every error answer is the one-field problem, FastAPI's 422 included (its
        # HTTPValidationError is replaced: the handlers in this module answer ``detail`` text)
        documented["content"] = problem


def _install_openapi(app: FastAPI) -> None:
    """The OpenAPI document with every referenced schema defined and the request
    signature declared as the security scheme of every /v1 route."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = spec.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for body in _BODY_MODELS:
            schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[body.__name__] = schema
        components["securitySchemes"] = {"he-agg-signature": SIGNATURE_SCHEME}
        schemas.setdefault("Problem", _PROBLEM)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        for path, operations in spec["paths"].items():
            if path.startswith("/v1/"):
                for method, operation in operations.items():
                    operation["security"] = [{"he-agg-signature": []}]
                    _document_statuses(operation, method, path)
        app.openapi_schema = spec
        return spec

    app.openapi = build  # type: ignore[method-assign]

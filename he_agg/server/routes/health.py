"""Liveness (/health) and readiness (/ready), both open, and Prometheus metrics
(admin-signed unless HE_AGG_METRICS_OPEN)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from he_agg.errors import ServiceError, StoreError
from he_agg.server import metrics
from he_agg.server.deps import StateDep, authenticate, binary, require_admin

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers (on the event loop, touching nothing else)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "the store or the disk is not ready"}})
def ready(state: StateDep) -> dict[str, str]:
    """Readiness: the store takes a write and the data folder has room for uploads."""
    try:
        state.store.prune_nonces(0.0)  # a real write transaction that changes nothing
    except StoreError as exc:
        raise ServiceError(503, f"the store is not writable: {exc}") from exc
    free = shutil.disk_usage(state.settings.data_dir).free
    if free < state.settings.min_free_bytes:
        raise ServiceError(
            503, f"{free} bytes free in the data folder, below {state.settings.min_free_bytes}"
        )
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **binary("Prometheus text exposition format", "text/plain"),
        401: {"description": "unsigned or badly signed (unless HE_AGG_METRICS_OPEN)"},
        403: {"description": "signed by a key that is not the admin's"},
    },
)
async def prometheus_metrics(request: Request, state: StateDep) -> Response:
    if not state.settings.metrics_open:
        require_admin(await authenticate(request, state))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

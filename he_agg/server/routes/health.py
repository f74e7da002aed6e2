"""Health (open) and Prometheus metrics (admin-signed unless HE_AGG_METRICS_OPEN)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from he_agg.server import metrics
from he_agg.server.auth import body_digest, complete, read_headers, request_target
from he_agg.server.deps import StateDep, binary, require_admin

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses=binary("Prometheus text exposition format", "text/plain"),
)
async def prometheus_metrics(request: Request, state: StateDep) -> Response:
    if not state.settings.metrics_open:
        pending = read_headers(request, state.settings.max_skew_seconds)
        caller = complete(
            pending, "GET", request_target(request), body_digest(b""), state.store, state.admin_keys
        )
        require_admin(caller)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""Prometheus metrics of the aggregator, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["PARTIALS_MERGED", "REGISTRY", "REJECTED", "ROUNDS", "UPLOADS", "UPLOAD_BYTES"]

REGISTRY = CollectorRegistry()
UPLOADS = Counter("he_agg_uploads_total", "updates stored", registry=REGISTRY)
UPLOAD_BYTES = Counter("he_agg_upload_bytes_total", "bytes of updates stored", registry=REGISTRY)
REJECTED = Counter(
    "he_agg_rejected_requests_total",
    "requests answered with an error",
    ["status"],
    registry=REGISTRY,
)
ROUNDS = Counter(
    "he_agg_round_transitions_total", "round state changes", ["state"], registry=REGISTRY
)
PARTIALS_MERGED = Counter(
    "he_agg_partial_sums_merged_total",
    "other replicas' partial sums added by this replica's closes (tree aggregation)",
    registry=REGISTRY,
)

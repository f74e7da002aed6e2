"""The ServerApp side: Flower's FedAvg with he-agg doing the averaging.

Per Flower round the strategy opens an he-agg round (signed with the federation admin's
key), names it in the train config, samples and sends as FedAvg does, and, once the
replies are in, closes the he-agg round and waits for the committee to publish the
average. The replies carry metrics and an upload receipt, never a model: each ClientApp
uploaded Enc(n_k · w_k) to the aggregator itself (:mod:`clients.flower.mod`). What comes
back is he-agg's published model, Σ n_k·w_k / Σ n_k over the clients that uploaded,
which is Flower's weighted FedAvg to within the parameter set's CKKS error bound.

The strategy holds the aggregator's URL and the admin's Ed25519 signing key, nothing
else: no secret key share, no client key, no update. A round he-agg aborts (fewer than
K_min uploads, a committee below t, τ spent) or that is not published in time keeps the
previous global model; the strategy logs why and goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

from clients.admin import Admin
from clients.flower.records import FEDERATION, RECEIPT_RECORD, ROUND, WEIGHT_KEY
from clients.flower.settings import PASSPHRASE_ENV
from he_agg.api.models import RoundOut
from he_agg.api.states import RoundState
from he_agg.errors import HeAggError, ServiceError
from keys.identity import load_identity

__all__ = ["HeAggFedAvg", "RoundOutcome"]

log = logging.getLogger("flwr.he_agg")

MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]
Layout = dict[str, tuple[str, tuple[int, ...]]]  # tensor name → (dtype, shape)


@dataclass(frozen=True)
class RoundOutcome:
    """What became of one Flower round's he-agg round."""

    server_round: int
    he_agg_round: int
    state: RoundState
    uploads: tuple[str, ...]  # the clients whose uploads the aggregate sums
    reason: str | None  # why it was aborted or gave no model; None once published

    @property
    def published(self) -> bool:
        return self.state == RoundState.PUBLISHED and self.reason is None


class HeAggFedAvg(FedAvg):
    """``FedAvg`` whose average the he-agg committee decrypts; the ServerApp never sees
    an individual update. Sampling, evaluation and metric aggregation are FedAvg's.

    ``admin_key``: an Ed25519 key the aggregator lists as an admin (``he-agg serve
    --admin``), used to open and close rounds: the federation admin's, or better an
    operator key of its own, which cannot sign a roster change (docs/flower.md).
    ``round_deadline``: seconds an he-agg round stays open for uploads (its deadline
    closes it even if the ServerApp dies); keep it at least Flower's ``timeout``.
    ``model_timeout``: seconds to wait, after closing, for the published model (and to
    retry opening a round while the next key epoch's DKG runs).
    """

    def __init__(
        self,
        server: str,
        federation: str,
        admin_key: Ed25519PrivateKey,
        *,
        ca_file: Path | str | None = None,
        round_deadline: float = 3600.0,
        model_timeout: float = 600.0,
        poll_interval: float = 0.25,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggregation | None = None,
        evaluate_metrics_aggr_fn: MetricsAggregation | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.server = server
        self.federation = federation
        self.round_deadline = round_deadline
        self.model_timeout = model_timeout
        self.poll_interval = poll_interval
        verify: Path | bool = Path(ca_file) if ca_file is not None else True
        self._admin = Admin(server, admin_key, verify=verify)
        self._open: dict[int, tuple[int, Layout]] = {}  # Flower round → he-agg round
        self.outcomes: dict[int, RoundOutcome] = {}

    @classmethod
    def from_key_file(
        cls,
        server: str,
        federation: str,
        admin_key_file: Path | str,
        *,
        passphrase: str | None = None,
        **options: Any,
    ) -> HeAggFedAvg:
        """Open the admin's key file (``he-agg keys generate``; passphrase default:
        ``HE_AGG_PASSPHRASE``) and keep only its Ed25519 signing key."""
        secret = passphrase or os.environ.get(PASSPHRASE_ENV)
        if not secret:
            raise ValueError(f"set {PASSPHRASE_ENV} to open the admin key {admin_key_file}")
        signing = load_identity(Path(admin_key_file), secret).signing
        return cls(server, federation, signing, **options)

    def summary(self) -> None:
        super().summary()
        log.info("\t└──> he-agg: federation %r at %s", self.federation, self.server)

    # ---- training ------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling; then an he-agg round opened and named in the config."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if not messages:
            return []
        try:
            number = self._open_round()
        except HeAggError as exc:
            log.error(
                "he-agg: cannot open a round (%s); Flower round %d skips training",
                exc,
                server_round,
            )
            return []
        for message in messages:
            train_config = message.content.config_records[self.configrecord_key]
            train_config[ROUND] = number
            train_config[FEDERATION] = self.federation
            train_config[WEIGHT_KEY] = self.weighted_by_key
        k_min = self._k_min()
        if k_min is not None and len(messages) < k_min:
            log.warning(
                "he-agg: %d nodes sampled, fewer than K_min = %d: the round will abort "
                "(raise min_train_nodes and min_available_nodes to at least K_min)",
                len(messages),
                k_min,
            )
        layout = {name: (a.dtype, tuple(a.shape)) for name, a in arrays.items()}
        self._open[server_round] = (number, layout)
        log.info(
            "he-agg: Flower round %d uploads into he-agg round %d (%d nodes sampled)",
            server_round,
            number,
            len(messages),
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Metrics as FedAvg aggregates them; the arrays from he-agg's published model."""
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        valid = self._without_plaintext(valid)
        metrics = self._aggregate_metrics(valid)
        if server_round not in self._open:
            return None, metrics
        number, layout = self._open.pop(server_round)
        return self._finish(server_round, number, layout, _receipt_clients(valid)), metrics

    def _open_round(self) -> int:
        """While the next key epoch's DKG runs, opening answers 409: retry a while."""
        deadline = time.monotonic() + self.model_timeout
        while True:
            try:
                return self._admin.open_round(self.federation, self.round_deadline).number
            except ServiceError as exc:
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_interval)

    def _k_min(self) -> int | None:
        """K_min of the newest roster the admin signed (None if it cannot be read now)."""
        try:
            return self._admin.rosters(self.federation)[-1].roster.k_min
        except HeAggError:
            return None

    def _without_plaintext(self, replies: list[Message]) -> list[Message]:
        """A reply carrying arrays came from a ClientApp without the he-agg mod: its model
        crossed the ServerApp in plaintext. It is not used, and said so loudly."""
        kept = []
        for reply in replies:
            if reply.content.array_records:
                log.error(
                    "he-agg: node %d replied with model arrays in plaintext (no he-agg mod "
                    "on its ClientApp?); the reply is ignored",
                    reply.metadata.src_node_id,
                )
            else:
                kept.append(reply)
        return kept

    def _aggregate_metrics(self, replies: list[Message]) -> MetricRecord | None:
        if not replies:
            return None
        contents = [reply.content for reply in replies]
        try:
            validate_message_reply_consistency(contents, self.weighted_by_key, False)
        except InconsistentMessageReplies as exc:
            log.warning("he-agg: train metrics not aggregated: %s", exc)
            return None
        return self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def _finish(
        self,
        server_round: int,
        number: int,
        layout: Layout,
        receipts: set[str],
    ) -> ArrayRecord | None:
        """Close the he-agg round, wait for its model; None (keep the old model) if none."""
        try:
            status = self._wait_for_model(self._admin.close_round(self.federation, number))
        except HeAggError as exc:
            self._record(server_round, number, RoundState.ABORTED, (), f"he-agg error: {exc}")
            log.error("he-agg: round %d failed (%s); the global model stays as it was", number, exc)
            return None
        missing = sorted(receipts - set(status.uploads))
        if missing:
            log.warning(
                "he-agg: round %d leaves out uploads of %s (after it closed?)",
                number,
                ", ".join(missing),
            )
        if not status.model_ready:
            reason = self._why_no_model(status)
            self._record(server_round, number, status.state, tuple(status.uploads), reason)
            log.warning(
                "he-agg: round %d gave no model: %s; the global model stays as it was",
                number,
                reason,
            )
            return None
        try:
            arrays = _as_arrayrecord(self._admin.model(self.federation, number), layout)
        except (HeAggError, ValueError) as exc:
            self._record(server_round, number, status.state, tuple(status.uploads), str(exc))
            log.error("he-agg: round %d's model is unusable: %s", number, exc)
            return None
        self._record(server_round, number, status.state, tuple(status.uploads), None)
        log.info(
            "he-agg: round %d published the average of %d uploads (%s)",
            number,
            len(status.uploads),
            ", ".join(status.uploads),
        )
        return arrays

    def _why_no_model(self, status: RoundOut) -> str:
        if status.state == RoundState.ABORTED:
            return status.reason or "aborted"
        return (
            f"no model {self.model_timeout:.0f} s after closing (state {status.state}, "
            f"decryption set {status.decryption_set}): fewer than t members answering?"
        )

    def _wait_for_model(self, status: RoundOut) -> RoundOut:
        deadline = time.monotonic() + self.model_timeout
        while not (status.model_ready or status.state == RoundState.ABORTED):
            if time.monotonic() > deadline:
                break
            time.sleep(self.poll_interval)
            status = self._admin.round(self.federation, status.number)
        return status

    def _record(
        self,
        server_round: int,
        number: int,
        state: RoundState,
        uploads: tuple[str, ...],
        reason: str | None,
    ) -> None:
        self.outcomes[server_round] = RoundOutcome(server_round, number, state, uploads, reason)


def _receipt_clients(replies: list[Message]) -> set[str]:
    """The clients whose replies carry an he-agg upload receipt."""
    return {
        str(reply.content[RECEIPT_RECORD]["client"])
        for reply in replies
        if RECEIPT_RECORD in reply.content.config_records
    }


def _as_arrayrecord(model: dict[str, Any], layout: Layout) -> ArrayRecord:
    """The published model as an ArrayRecord with the global model's names, order, shapes
    and dtypes (he-agg restores each tensor's dtype from the clients' manifest)."""
    if set(model) != set(layout):
        raise ValueError(
            f"the published model has tensors {sorted(model)}, the global model {sorted(layout)}"
        )
    arrays: dict[str, Array] = {}
    for name, (dtype, shape) in layout.items():
        value = np.asarray(model[name])
        if value.shape != shape:
            raise ValueError(f"{name}: published shape {value.shape}, global shape {shape}")
        arrays[name] = Array(value.astype(dtype, copy=False))
    return ArrayRecord(arrays)

"""The ClientApp side: a Flower mod that uploads the trained model to he-agg, encrypted
under the collective key and signed with the client's key, and replies to the ServerApp
with the metrics only.

The user's ``@app.train()`` function stays as it is (it returns its model in an
``ArrayRecord`` and its ``num-examples`` in a ``MetricRecord``); the mod runs it, takes
the model out of the reply, submits Enc(n_k · w_k) with n_k = num-examples to the round
the strategy named, and sends back the same metrics plus the upload receipt (round,
client, sha256, size). A train message that names no he-agg round is refused before
training: with the mod installed, a model never leaves the node in plaintext.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import (
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    RecordDict,
    UserConfigValue,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from clients.flower.records import FEDERATION, RECEIPT_RECORD, ROUND, WEIGHT_KEY
from clients.flower.settings import ClientSettings
from clients.participant import Participant
from he_agg.errors import HeAggError

__all__ = ["HeAggMod", "he_agg_mod"]

log = logging.getLogger("flwr.he_agg")

_DEFAULT_WEIGHT_KEY = "num-examples"


class HeAggMod:
    """A Flower mod (``ClientApp(mods=[HeAggMod(...)])``). ``defaults`` are settings
    (:mod:`clients.flower.settings`) used where neither the node config nor the run config
    gives one. One :class:`Participant` is kept per settings in each process, so the key
    file is opened once and the verified collective key is fetched once per key epoch."""

    def __init__(self, defaults: Mapping[str, UserConfigValue] | None = None) -> None:
        self.defaults = dict(defaults or {})
        self._participants: dict[ClientSettings, Participant] = {}

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, context)  # evaluation and queries pass through
        config = _he_agg_config(msg)
        if config is None:
            return _refuse(
                msg,
                "he-agg mod: this train message names no he-agg round, so the model would "
                "leave the node in plaintext; the ServerApp must use clients.flower.HeAggFedAvg",
            )
        try:  # before training: a node that cannot upload need not train
            participant = self._participant(ClientSettings.from_context(context, self.defaults))
            _check_federation(config, participant)
        except (HeAggError, OSError, ValueError) as exc:
            return _refuse(msg, f"he-agg mod: {type(exc).__name__}: {exc}")
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        try:
            return self._upload(msg, reply, participant, config)
        except (HeAggError, OSError, ValueError) as exc:
            return _refuse(msg, f"he-agg upload failed: {type(exc).__name__}: {exc}")

    def _upload(
        self, msg: Message, reply: Message, participant: Participant, config: ConfigRecord
    ) -> Message:
        content = reply.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            raise ValueError("the train reply must hold one ArrayRecord and one MetricRecord")
        arrays = next(iter(content.array_records.values()))
        metrics = next(iter(content.metric_records.values()))
        weight_key = str(config.get(WEIGHT_KEY, _DEFAULT_WEIGHT_KEY))
        samples = metrics.get(weight_key)
        if not isinstance(samples, int | float) or isinstance(samples, bool):
            raise ValueError(f"the reply's MetricRecord has no number {weight_key!r}")
        update: dict[str, Any] = {name: np.asarray(array.numpy()) for name, array in arrays.items()}
        receipt = participant.submit(update, float(samples), round=_as_int(config[ROUND]))
        log.info(
            "he-agg: %s uploaded %d bytes to round %d", receipt.client, receipt.size, receipt.round
        )
        # the same records as the user's reply, the model replaced by the upload receipt
        answer = RecordDict(
            {key: record for key, record in content.items() if key not in content.array_records}
        )
        answer[RECEIPT_RECORD] = ConfigRecord(
            {
                "round": receipt.round,
                "client": receipt.client,
                "sha256": receipt.sha256,
                "size": receipt.size,
            }
        )
        return Message(answer, reply_to=msg)

    def _participant(self, settings: ClientSettings) -> Participant:
        if settings not in self._participants:
            self._participants[settings] = settings.participant()
        return self._participants[settings]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Ray ships the ClientApp to its actors) without open HTTP clients."""
        return {"defaults": self.defaults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.defaults = state["defaults"]
        self._participants = {}


he_agg_mod = HeAggMod()
"""The mod with no defaults: every setting comes from the node or run config."""


def _he_agg_config(msg: Message) -> ConfigRecord | None:
    for record in msg.content.config_records.values():
        if ROUND in record:
            return record
    return None


def _check_federation(config: ConfigRecord, participant: Participant) -> None:
    federation = str(config.get(FEDERATION, participant.federation))
    if federation != participant.federation:
        raise ValueError(
            f"the ServerApp asks for federation {federation!r}; this client's pinned "
            f"roster is for {participant.federation!r}"
        )


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{ROUND!r} must be an integer, not {value!r}")
    return value


def _refuse(msg: Message, reason: str) -> Message:
    log.error("%s", reason)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)

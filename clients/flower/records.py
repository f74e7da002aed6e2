"""The names the he-agg strategy and the ClientApp mod agree on, in Flower's records.

The strategy writes three entries into the train ``ConfigRecord``; the mod answers with
one ``ConfigRecord`` of its own in place of the model. Both sides import them from here.

| Record                      | Key                 | Value                                 |
|-----------------------------|---------------------|---------------------------------------|
| train config (server → node)| ``he-agg-round``    | the he-agg round to upload into (int) |
|                             | ``he-agg-federation``| the federation id (str), checked     |
|                             | ``he-agg-weight-key``| the MetricRecord key giving n_k      |
| reply (node → server)       | ``he-agg`` record   | ``round``, ``client``, ``sha256``,    |
|                             |                     | ``size`` of the he-agg upload receipt |
"""

from __future__ import annotations

__all__ = [
    "FEDERATION",
    "RECEIPT_RECORD",
    "ROUND",
    "WEIGHT_KEY",
]

ROUND = "he-agg-round"
FEDERATION = "he-agg-federation"
WEIGHT_KEY = "he-agg-weight-key"
RECEIPT_RECORD = "he-agg"

"""Where a ClientApp finds its he-agg identity: the node config first (``flower-supernode
--node-config``), then the run config, then the defaults given to the mod (the one way to
configure a ``run_simulation`` run, whose run config is empty).

A node's name and key file can also be derived from its ``partition-id``, as in
simulation: the name is ``he-agg-name-prefix`` + partition id, the key file
``he-agg-key-dir``/<name>.identity. The key file's passphrase is never part of any
config (the ServerApp sees the run config): it comes from ``HE_AGG_PASSPHRASE`` in the
SuperNode's environment, as for every ``he-agg`` command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, UserConfigValue

from clients.participant import Participant
from he_agg.roster import SignedRoster
from keys.identity import load_identity

__all__ = [
    "CA_FILE",
    "KEY",
    "KEY_DIR",
    "NAME",
    "NAME_PREFIX",
    "PASSPHRASE_ENV",
    "ROSTER",
    "SERVER",
    "SPOOL_DIR",
    "ClientSettings",
]

SERVER = "he-agg-server"  # the aggregator's base URL
ROSTER = "he-agg-roster"  # the pinned, admin-signed roster file
NAME = "he-agg-name"  # the client's enrolled name
NAME_PREFIX = "he-agg-name-prefix"  # or: prefix + partition-id
KEY = "he-agg-key"  # the client's key file (he-agg keys generate)
KEY_DIR = "he-agg-key-dir"  # or: folder holding <name>.identity
CA_FILE = "he-agg-ca-file"  # CA certificate of an https aggregator
SPOOL_DIR = "he-agg-spool-dir"  # uploads kept until acknowledged
PASSPHRASE_ENV = "HE_AGG_PASSPHRASE"

_DEFAULT_SERVER = "http://127.0.0.1:8750"
_DEFAULT_PREFIX = "client-"


@dataclass(frozen=True)
class ClientSettings:
    """One ClientApp's he-agg identity and aggregator, as files and a URL (no secrets)."""

    server: str
    roster_file: Path
    name: str
    key_file: Path
    ca_file: Path | None = None
    spool_dir: Path | None = None

    @classmethod
    def from_context(
        cls, context: Context, defaults: Mapping[str, UserConfigValue] | None = None
    ) -> ClientSettings:
        sources = (context.node_config, context.run_config, defaults or {})

        def get(key: str) -> str | None:
            for source in sources:
                value = source.get(key)
                if value is not None and value != "":
                    return str(value)
            return None

        roster = get(ROSTER)
        if roster is None:
            raise ValueError(f"no pinned roster: set {ROSTER!r} in the node or run config")
        name = get(NAME)
        if name is None:
            partition = context.node_config.get("partition-id")
            if partition is None:
                raise ValueError(f"set {NAME!r} in the node config (or run in simulation)")
            name = f"{get(NAME_PREFIX) or _DEFAULT_PREFIX}{partition}"
        key = get(KEY)
        if key is None:
            key_dir = get(KEY_DIR)
            if key_dir is None:
                raise ValueError(f"set {KEY!r} (a key file) or {KEY_DIR!r} in the node config")
            key = str(Path(key_dir) / f"{name}.identity")
        ca_file, spool_dir = get(CA_FILE), get(SPOOL_DIR)
        return cls(
            server=get(SERVER) or _DEFAULT_SERVER,
            roster_file=Path(roster),
            name=name,
            key_file=Path(key),
            ca_file=None if ca_file is None else Path(ca_file),
            spool_dir=None if spool_dir is None else Path(spool_dir),
        )

    def participant(self) -> Participant:
        """The SDK client for these settings: its key file opened with the passphrase
        from the environment, its roster pinned (and followed) from the roster file."""
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if not passphrase:
            raise ValueError(
                f"{PASSPHRASE_ENV} is not set in this SuperNode's environment: it opens "
                f"the key file {self.key_file}"
            )
        identity = load_identity(self.key_file, passphrase)
        roster = SignedRoster.from_json(self.roster_file.read_text())
        return Participant(
            self.server,
            roster.roster.federation,
            self.name,
            identity.signing,
            verify=self.ca_file if self.ca_file is not None else True,
            show_progress=False,
            roster=roster,
            roster_file=self.roster_file,
            spool_dir=self.spool_dir,
        )

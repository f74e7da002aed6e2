"""The server's tables as SQLAlchemy Core objects: the schema at the newest migration.

This mirrors what the migrations in :mod:`he_agg.server.store.migrations` build; it is what
:mod:`he_agg.server.store.sql` queries and what ``alembic revision --autogenerate`` compares
against. The table and column names, types and keys are those of the pre-Alembic SQLite
schema (migration 0001), plus the indexes of migration 0002, the endorsements table of
migration 0003, and migration 0004's key epochs: the ``epochs`` table (which took over
``public_key`` and ``decryptions_used`` from ``federations``) and ``rounds.epoch``. JSON
values (``config``, ``decryption_set``, ``unresponsive``) stay TEXT holding JSON, as they
always were.

Two portable types keep SQLite's DDL exactly as it was while giving PostgreSQL the width
it needs: SQLite's REAL is an 8-byte float but PostgreSQL's REAL is 4 bytes (a timestamp
would lose seconds), and a blob's size or a request timestamp may not fit a 4-byte INTEGER.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "BigInt",
    "Real",
    "endorsements",
    "epochs",
    "federations",
    "keygen",
    "metadata",
    "nonces",
    "parties",
    "rounds",
    "shares",
    "uploads",
]

# DOUBLE PRECISION on PostgreSQL, REAL (also 8 bytes) on SQLite.
Real: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
# BIGINT on PostgreSQL, INTEGER (already up to 8 bytes) on SQLite.
BigInt: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

federations = sa.Table(
    "federations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("config", sa.Text, nullable=False),  # JSON object
    sa.Column("created", Real, nullable=False),
    # The current epoch: the one new rounds open under.
    sa.Column("epoch", sa.Integer, nullable=False, server_default=sa.text("0")),
)

# 0004: one row per key epoch, with its own roster, collective key and budget τ.
epochs = sa.Table(
    "epochs",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("roster", sa.Text, nullable=False),  # signed roster JSON; '' without one
    sa.Column("created", Real, nullable=False),
    sa.Column("public_key", sa.Text),  # blob digest of the collective key, once published
    sa.Column("decryptions_used", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("retired", Real),
)

parties = sa.Table(
    "parties",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("signing_key", sa.Text, nullable=False),
    sa.Column("encryption_key", sa.Text),
    sa.Column("member_index", sa.Integer),
    sa.Index("parties_by_key", "signing_key"),
)

keygen = sa.Table(
    "keygen",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("sender", sa.Integer, primary_key=True),
    sa.Column("recipient", sa.Integer, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("deadline", Real, nullable=False),
    sa.Column("opened", Real, nullable=False),
    sa.Column("closed", Real),
    sa.Column("reason", sa.Text),
    sa.Column("manifest", sa.Text),
    sa.Column("aggregate", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("decryption_set", sa.Text),  # JSON list of member indices, NULL before any
    sa.Column("attempt_started", Real),
    sa.Column("unresponsive", sa.Text, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("model", sa.Text),
    # 0004: the key epoch the round opened under.
    sa.Column("epoch", sa.Integer, nullable=False, server_default=sa.text("0")),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("client", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("size", BigInt, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("timestamp", BigInt, nullable=False),
    sa.Column("nonce", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("received", Real, nullable=False),
    # 0002: blob_in_use() looks uploads up by digest.
    sa.Index("uploads_by_sha256", "sha256"),
)

shares = sa.Table(
    "shares",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("member", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.Text, nullable=False),
)

# 0003: members' endorsements of a round's upload set (he_agg.endorsement), one per member.
endorsements = sa.Table(
    "endorsements",
    metadata,
    sa.Column("federation", sa.Text, primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("member", sa.Integer, primary_key=True),
    sa.Column("upload_set", sa.Text, nullable=False),  # the set digest, hex
    sa.Column("body", sa.Text, nullable=False),  # the signed Endorsement JSON
)

nonces = sa.Table(
    "nonces",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("nonce", sa.Text, primary_key=True),
    sa.Column("seen", Real, nullable=False),
    # 0002: prune_nonces() deletes by age.
    sa.Index("nonces_by_seen", "seen"),
)

"""Baseline: the schema every pre-Alembic he-agg database already has.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

A database made before migrations existed (a ``federations`` table, no ``alembic_version``)
is stamped at this revision rather than upgraded through it. The column types are spelt
out here, not imported from tables.py, so that this revision never changes after the fact.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: REAL and INTEGER exactly as before; PostgreSQL: 8-byte float and integer.
_REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
_BIGINT: sa.types.TypeEngine[int] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ZERO = sa.text("0")


def upgrade() -> None:
    """Create the seven tables and the parties_by_key index."""
    _create_federation_tables()
    _create_round_tables()


def _create_federation_tables() -> None:
    op.create_table(
        "federations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created", _REAL, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False, server_default=_ZERO),
        sa.Column("public_key", sa.Text),
        sa.Column("decryptions_used", sa.Integer, nullable=False, server_default=_ZERO),
    )
    op.create_table(
        "parties",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("signing_key", sa.Text, nullable=False),
        sa.Column("encryption_key", sa.Text),
        sa.Column("member_index", sa.Integer),
    )
    op.create_index("parties_by_key", "parties", ["signing_key"])
    op.create_table(
        "keygen",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("sender", sa.Integer, primary_key=True),
        sa.Column("recipient", sa.Integer, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def _create_round_tables() -> None:
    op.create_table(
        "rounds",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("deadline", _REAL, nullable=False),
        sa.Column("opened", _REAL, nullable=False),
        sa.Column("closed", _REAL),
        sa.Column("reason", sa.Text),
        sa.Column("manifest", sa.Text),
        sa.Column("aggregate", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False, server_default=_ZERO),
        sa.Column("decryption_set", sa.Text),
        sa.Column("attempt_started", _REAL),
        sa.Column("unresponsive", sa.Text, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("model", sa.Text),
    )
    op.create_table(
        "uploads",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("client", sa.Text, primary_key=True),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("size", _BIGINT, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("timestamp", _BIGINT, nullable=False),
        sa.Column("nonce", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("received", _REAL, nullable=False),
    )
    op.create_table(
        "shares",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("member", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.Text, nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("nonce", sa.Text, primary_key=True),
        sa.Column("seen", _REAL, nullable=False),
    )


def downgrade() -> None:
    """Drop everything (the schema before the baseline is no schema)."""
    for table in ("nonces", "shares", "uploads", "rounds", "keygen", "parties", "federations"):
        op.drop_table(table)

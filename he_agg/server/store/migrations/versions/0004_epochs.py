"""Key epochs: each epoch of a federation's collective key gets its own row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-06-01

A federation's key now goes through epochs 0, 1, 2, …, each with its own admin-signed
roster, collective key and decryption budget τ, and every round belongs to one. The
``epochs`` table takes over ``public_key`` and ``decryptions_used`` from ``federations``
(whose ``epoch`` stays, as the current epoch), and ``rounds`` gains ``epoch``. Every
existing federation gets one row for its current epoch, with the roster it was created
with; its rounds all opened under that epoch.

The roster is read out of ``federations.config`` in Python, so the same code runs on
SQLite and PostgreSQL. SQLite cannot drop a column in place, so ``batch_alter_table``
rebuilds the table there; PostgreSQL alters it.
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: REAL on SQLite, an 8-byte float on PostgreSQL.
_REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
_ZERO = sa.text("0")

# Lightweight views of the tables as this revision finds them (not tables.py, which moves on).
_federations = sa.table(
    "federations",
    sa.column("id", sa.Text),
    sa.column("config", sa.Text),
    sa.column("created", _REAL),
    sa.column("epoch", sa.Integer),
    sa.column("public_key", sa.Text),
    sa.column("decryptions_used", sa.Integer),
)
_epochs = sa.table(
    "epochs",
    sa.column("federation", sa.Text),
    sa.column("epoch", sa.Integer),
    sa.column("public_key", sa.Text),
    sa.column("decryptions_used", sa.Integer),
)
_rounds = sa.table("rounds", sa.column("federation", sa.Text), sa.column("epoch", sa.Integer))


def upgrade() -> None:
    """Create epochs with a row per federation, add rounds.epoch, drop the moved columns."""
    epochs = op.create_table(
        "epochs",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("roster", sa.Text, nullable=False),
        sa.Column("created", _REAL, nullable=False),
        sa.Column("public_key", sa.Text),
        sa.Column("decryptions_used", sa.Integer, nullable=False, server_default=_ZERO),
        sa.Column("retired", _REAL),
    )
    rows = op.get_bind().execute(sa.select(_federations)).all()
    if rows:
        op.bulk_insert(epochs, [_current_epoch(row) for row in rows])

    op.add_column("rounds", sa.Column("epoch", sa.Integer, nullable=False, server_default=_ZERO))
    current = (
        sa.select(_federations.c.epoch)
        .where(_federations.c.id == _rounds.c.federation)
        .scalar_subquery()
    )
    op.execute(sa.update(_rounds).values(epoch=sa.func.coalesce(current, 0)))

    with op.batch_alter_table("federations") as batch:
        batch.drop_column("public_key")
        batch.drop_column("decryptions_used")


def _current_epoch(federation: sa.Row[Any]) -> dict[str, Any]:
    """The epochs row of a federation's current epoch, from its columns and its config."""
    config = json.loads(federation.config or "{}")
    roster = config.get("roster") if isinstance(config, dict) else None
    return {
        "federation": federation.id,
        "epoch": federation.epoch,
        "roster": roster or "",
        "created": federation.created,
        "public_key": federation.public_key,
        "decryptions_used": federation.decryptions_used,
        "retired": None,
    }


def downgrade() -> None:
    """Put the current epoch's key and count back on federations; drop the rest."""
    with op.batch_alter_table("federations") as batch:
        batch.add_column(sa.Column("public_key", sa.Text))
        batch.add_column(
            sa.Column("decryptions_used", sa.Integer, nullable=False, server_default=_ZERO)
        )

    def of_current_epoch(column: sa.ColumnClause[Any]) -> sa.ScalarSelect[Any]:
        return (
            sa.select(column)
            .where(
                _epochs.c.federation == _federations.c.id,
                _epochs.c.epoch == _federations.c.epoch,
            )
            .scalar_subquery()
        )

    op.execute(
        sa.update(_federations).values(
            public_key=of_current_epoch(_epochs.c.public_key),
            decryptions_used=sa.func.coalesce(of_current_epoch(_epochs.c.decryptions_used), 0),
        )
    )
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("epoch")
    op.drop_table("epochs")

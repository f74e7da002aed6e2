"""Members' endorsements of a round's upload set.

Revision ID: 0003
Revises: 0002
Create Date: 2026-05-20

Before a share is released, a quorum of committee members endorses one upload set per
round (:mod:`he_agg.endorsement`); the server keeps each member's signed endorsement and
hands them out with the decryption request. One row per (federation, round, member).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the endorsements table."""
    op.create_table(
        "endorsements",
        sa.Column("federation", sa.Text, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("member", sa.Integer, primary_key=True),
        sa.Column("upload_set", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("endorsements")

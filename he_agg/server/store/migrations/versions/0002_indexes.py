"""Indexes for the two lookups that scanned whole tables: uploads by digest, nonces by age.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-01

``blob_in_use(digest)`` searches uploads by sha256, and ``prune_nonces(before)`` deletes
nonces by ``seen``; both ran as full scans on the baseline schema.
"""

from collections.abc import Sequence

from alembic import op

__all__ = ["downgrade", "upgrade"]

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add uploads_by_sha256 and nonces_by_seen."""
    op.create_index("uploads_by_sha256", "uploads", ["sha256"])
    op.create_index("nonces_by_seen", "nonces", ["seen"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("nonces_by_seen", table_name="nonces")
    op.drop_index("uploads_by_sha256", table_name="uploads")

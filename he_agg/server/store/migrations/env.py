"""Alembic's environment for the store: migrate on the connection the caller hands over.

There is no alembic.ini and no URL here. :func:`he_agg.server.store.migrations.alembic_config`
builds the configuration and puts a live connection, already inside the caller's locked
transaction, in ``config.attributes["connection"]``; everything runs in that transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from he_agg.server.store.tables import metadata

__all__: list[str] = []


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the store's migrations run on a live connection: use "
            "he_agg.server.store.migrations.alembic_config(connection)"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; autogenerate then writes batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()

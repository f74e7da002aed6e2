"""Alembic migrations for the server's store, driven from code (there is no alembic.ini).

:func:`upgrade_to_head` is what :class:`~he_agg.server.store.sql.SqlStore` runs when it
opens a database, inside its own serialised transaction:

* an empty database is upgraded from nothing;
* a database made before migrations existed (it has ``federations`` but no
  ``alembic_version``) is stamped at the baseline, 0001, and upgraded from there;
* a database at a revision this code does not know (written by a newer he-agg) raises
  :class:`~he_agg.errors.SchemaError` before anything is written.

To add a revision, from the repository root::

    python -c "from alembic import command; from he_agg.server.store.migrations import \\
    alembic_config; command.revision(alembic_config(), 'what it changes', rev_id='0003')"

then fill in ``upgrade``/``downgrade`` in the new file under ``versions/`` and update
:mod:`he_agg.server.store.tables` to match.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from he_agg.errors import SchemaError

__all__ = ["BASELINE", "SCRIPT_LOCATION", "alembic_config", "current_revisions", "upgrade_to_head"]

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema of every database made before Alembic


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """A configuration pointing at this folder, migrating on ``connection`` if one is given."""
    config = Config()
    # Config values pass through configparser interpolation, where % is special.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revisions(connection: sa.Connection) -> tuple[str, ...]:
    """The revisions stamped in the database's alembic_version table (none if absent)."""
    return tuple(MigrationContext.configure(connection).get_current_heads())


def upgrade_to_head(connection: sa.Connection) -> None:
    """Bring the schema to head inside the caller's transaction (see the module docstring)."""
    config = alembic_config(connection)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    known = {revision.revision for revision in script.walk_revisions()}
    current = current_revisions(connection)
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        raise SchemaError(
            f"database schema revision {unknown[0]!r} is newer than this he-agg knows "
            f"(head is {head}); upgrade he-agg"
        )
    if current == (head,):
        return  # the common case: nothing to run, so do not even load the revisions
    if not current and sa.inspect(connection).has_table("federations"):
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")

"""The store's Alembic revisions, one module each (a package so setuptools ships them)."""

__all__: list[str] = []

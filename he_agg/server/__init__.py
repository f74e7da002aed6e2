"""The aggregator service: FastAPI under uvicorn; SQLite or PostgreSQL plus fsynced blobs."""

from he_agg.server.app import create_app
from he_agg.server.config import Settings

__all__ = ["Settings", "create_app"]

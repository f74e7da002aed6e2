"""Every path the SDK and the member agent build names a route the server serves."""

from __future__ import annotations

import inspect
import re

import pytest
from starlette.routing import compile_path

from he_agg.api import paths
from he_agg.server.routes import decryption, federations, health, keygen, model, rounds, uploads

ROUTERS = (federations, keygen, rounds, uploads, decryption, model, health)
TEMPLATES = sorted({route.path for module in ROUTERS for route in module.router.routes})  # type: ignore[attr-defined]

SAMPLE = {"federation_id": "fed-1", "number": 7, "client": "bank-2", "member": 3}
SAMPLE.update({"sender": 2, "recipient": 5, "attempt": 4, "state": None, "epoch": None})
SAMPLE.update({"since": "ab12", "wait": 2.5})


def _builders() -> list[str]:
    return [name for name in paths.__all__ if callable(getattr(paths, name))]


@pytest.mark.parametrize("name", _builders())
def test_path_matches_a_route(name: str) -> None:
    builder = getattr(paths, name)
    arguments = {p: SAMPLE[p] for p in inspect.signature(builder).parameters}
    url = builder(**arguments).split("?")[0]
    matches = [t for t in TEMPLATES if compile_path(t)[0].match(url)]
    assert matches, f"{name} builds {url}, which no route serves"


def test_update_path_is_the_signed_target() -> None:
    """Members re-verify a client's signature over exactly this string."""
    assert paths.update("fed", 3, "bank-1") == "/v1/federations/fed/rounds/3/updates/bank-1"


def test_every_route_has_a_builder() -> None:
    built = set()
    for name in _builders():
        builder = getattr(paths, name)
        url = builder(**{p: SAMPLE[p] for p in inspect.signature(builder).parameters})
        built.add(url.split("?")[0])
    unserved = [
        t
        for t in TEMPLATES
        if t.startswith(paths.PREFIX) and not any(compile_path(t)[0].match(u) for u in built)
    ]
    assert not unserved, f"routes without a path builder: {unserved}"


def test_query_of_round_listing() -> None:
    assert re.fullmatch(r".*/rounds\?round_state=open", paths.rounds("f", "open"))

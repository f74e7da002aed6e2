"""Every name a module promises in __all__ exists (as httpx keeps its exports honest).

Subpackages are walked recursively. A module may export nothing (no or an empty
``__all__``) only if it defines nothing public of its own, like a package ``__init__``
that just groups modules. One exemption, in ``SCRIPTS``: Alembic's ``env.py`` runs its
migration on import and only works inside Alembic, so it cannot be imported here.
"""

import importlib
import pkgutil
import types

import pytest

import clients
import he_agg
import keys

SCRIPTS = {"he_agg.server.store.migrations.env"}


def _modules() -> list[str]:
    names = set()
    for package in (he_agg, keys, clients):
        names.add(package.__name__)
        walk = pkgutil.walk_packages(package.__path__, package.__name__ + ".", onerror=print)
        names.update(info.name for info in walk)
    return sorted(names - SCRIPTS)


MODULES = _modules()


def _own_public_names(module: types.ModuleType) -> list[str]:
    """Public names defined in ``module`` itself: no submodules, nothing imported."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
        and name != "annotations"  # from __future__ import annotations
    ]


def test_the_walk_reaches_subpackages() -> None:
    for expected in ("clients.pilot.report", "clients.harness.server_process", "he_agg.api.paths"):
        assert expected in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if not exported:
        own = _own_public_names(module)
        assert not own, f"{name} defines {own} but exports nothing (add an __all__)"
        return
    missing = [symbol for symbol in exported if not hasattr(module, symbol)]
    assert not missing

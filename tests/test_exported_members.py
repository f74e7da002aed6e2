"""Every name a module promises in __all__ exists (as httpx keeps its exports honest)."""

import importlib
import pkgutil

import pytest

import clients
import he_agg
import keys

MODULES = sorted(
    info.name
    for package in (he_agg, keys, clients)
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name.endswith((".cli", ".demo")):
        return
    assert exported, f"{name} declares no __all__"
    missing = [symbol for symbol in exported if not hasattr(module, symbol)]
    assert not missing

"""The import graph: layers import only downward (DESIGN.md §8, ARCHITECTURE.md).

Every ``import`` in the three packages, including the lazy ones inside functions, is
mapped to the layer of the module it names; an arrow to a layer that is not allowed
fails the test. Exceptions, each with its reason, go in ``EXCEPTIONS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Longest prefix wins. Modules not listed under a more specific prefix belong to the
# package's own layer.
LAYERS: dict[str, str] = {
    "he_agg": "core",
    "he_agg.api": "api",
    "he_agg.backend": "backend",
    "he_agg.server": "server",
    "keys": "committee",
    "clients": "sdk",
    "clients.harness": "harness",
    "clients.simulation": "simulation",
    "clients.pilot": "pilot",
    "clients.bench": "bench",
    "clients.flower": "flower",
    "clients.demo": "apps",
    "clients.cli": "apps",
    "clients.cli_common": "apps",
    "clients.cli_federation": "apps",
    "clients.cli_parties": "apps",
}

# Which layers each layer may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "api": {"core", "api"},
    "backend": {"core", "backend"},
    "server": {"core", "api", "server"},
    "committee": {"core", "api", "committee"},
    "sdk": {"core", "api", "backend", "sdk"},
    "harness": {"core", "api", "committee", "sdk", "harness"},
    # the Flower strategy and ClientApp mod: the SDK, plus keys.identity to open key files
    "flower": {"core", "api", "backend", "committee", "sdk", "flower"},
    "simulation": {"core", "api", "backend", "committee", "sdk", "harness", "simulation"},
    "pilot": {"core", "api", "backend", "committee", "sdk", "harness", "simulation", "pilot"},
    "bench": {
        "core", "api", "backend", "committee", "sdk", "harness", "simulation", "pilot", "bench",
    },
    "apps": {
        "core", "api", "backend", "server", "committee", "sdk", "harness", "simulation",
        "pilot", "bench", "apps",
    },
}  # fmt: skip

# (importer, imported) pairs allowed against the rules above, with the reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("clients", "clients.simulation"): (
        "the founding article's `from clients import FederatedLearning`: the package's "
        "__init__ re-exports it lazily (PEP 562 __getattr__), so importing the SDK does "
        "not import the simulation or torch"
    ),
}


def layer_of(module: str) -> str | None:
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return None if best is None else LAYERS[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str = "") -> set[str]:
    """Every module an import statement in ``path`` names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


SOURCES = sorted(
    path for package in ("he_agg", "keys", "clients") for path in (ROOT / package).rglob("*.py")
)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def violations() -> list[str]:
    problems = []
    for path in SOURCES:
        importer = module_name(path)
        own = layer_of(importer)
        assert own is not None, importer
        for target in sorted(imports_of(path, package_of(path))):
            theirs = layer_of(target)
            if theirs is None or theirs in ALLOWED[own]:
                continue
            if (importer, target) in EXCEPTIONS or (
                importer,
                target.rpartition(".")[0],
            ) in EXCEPTIONS:
                continue
            problems.append(f"{importer} ({own}) imports {target} ({theirs})")
    return sorted(set(problems))


def test_every_module_has_a_layer() -> None:
    assert SOURCES, "no sources found"
    assert all(layer_of(module_name(path)) for path in SOURCES)


def test_layers_import_only_downward() -> None:
    problems = violations()
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The scan must catch a lazy import inside a function (as the old CLI had)."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from clients.participant import Participant\n")
    assert "clients.participant" in imports_of(module)
    assert layer_of("clients.participant") == "sdk"
    assert "sdk" not in ALLOWED["core"]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_cycles_between_layers(layer: str) -> None:
    """A layer may import another only if that one cannot import it back."""
    for other in ALLOWED[layer] - {layer}:
        assert layer not in ALLOWED[other], f"{layer} and {other} may import each other"

"""CI smoke test of ``he-agg bench --quick``: it runs and its JSON matches the schema.
Timings are not checked (performance goals live in benchmarks, not tests)."""

import json
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from clients.cli import app

SCHEMA = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.schema.json"


def test_bench_quick_writes_results_that_match_the_schema(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "suite.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    assert {(c["parameters"], c["clients"]) for c in data["cells"]} == {(10_000, 2), (10_000, 10)}
    for cell in data["cells"]:
        assert cell["he_agg"]["max_error"] < 1e-6  # the round decrypted correctly
    assert "| Parameters | Clients |" in (tmp_path / "suite.md").read_text()
    for plot in ("stages.png", "bytes.png", "scaling.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_schema_rejects_a_cell_without_timings() -> None:
    schema = json.loads(SCHEMA.read_text())
    bad = {
        "schema": "he-agg-bench/1",
        "environment": {},
        "repeats": 1,
        "parameter_set": {"name": "x", "N": 4096, "fingerprint": "00"},
        "cells": [],
    }
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        return
    raise AssertionError("an empty result validated")


def test_bench_scale_quick_publishes_the_exact_average(tmp_path: Path) -> None:
    """The scale benchmark at 20 clients: every upload through the real service, members
    summing as uploads arrive, and the published average inside its bound."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_scale.py", "--quick", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scale = json.loads((tmp_path / "scale-quick.json").read_text())["scale"]
    assert scale["clients"] == 20 and scale["correct"] is True
    assert scale["max_error"] <= scale["error_bound"]
    assert len(scale["members"]) == 3 and scale["server"]["peak_rss_mb"] > 0
    assert scale["blob_disk_bytes"] >= scale["uploaded_bytes"]  # every upload kept

"""The torture harness of issue 11: kill -9, fuzz, load and dropout against real server
processes over loopback, with the figures written as JSON and a markdown table.

Each part lives in its own module (``reliability_kill``, ``reliability_fuzz``,
``reliability_load``, ``reliability_dropout``) and starts its own federation in a scratch
folder; this module runs the parts asked for, shows progress and writes the report.
``benchmarks/reliability.py`` is the command line; ``tests/test_reliability_smoke.py``
runs every part at :meth:`ReliabilityConfig.smoke` size and checks the targets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from clients.bench.bench import environment
from clients.bench.reliability_common import Figure
from clients.bench.reliability_dropout import (
    DropoutConfig,
    DropoutFigures,
    dropout_sets,
    run_dropout,
)
from clients.bench.reliability_fuzz import FuzzConfig, FuzzFigures, run_fuzz
from clients.bench.reliability_kill import KillConfig, KillFigures, run_kill
from clients.bench.reliability_load import LoadConfig, LoadFigures, run_load

__all__ = [
    "PARTS",
    "ReliabilityConfig",
    "ReliabilityReport",
    "markdown_table",
    "run_reliability",
    "update_readme",
    "write_report",
]

PARTS = ("kill", "fuzz", "load", "dropout")
SCHEMA = "he-agg-reliability/1"
README_BEGIN = "<!-- BEGIN reliability -->"
README_END = "<!-- END reliability -->"

PartFigures = KillFigures | FuzzFigures | LoadFigures | DropoutFigures


@dataclass(frozen=True)
class ReliabilityConfig:
    parts: tuple[str, ...] = PARTS
    kill: KillConfig = field(default_factory=KillConfig)
    fuzz: FuzzConfig = field(default_factory=FuzzConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    label: str = "full"

    def describe(self) -> str:
        """The sizes of the parts asked for, in words."""
        sizes = {
            "kill": f"kill -9: {self.kill.trials:,} trials ({self.kill.default_trials:,} on "
            "the default parameter set)",
            "fuzz": f"fuzz: {self.fuzz.requests:,} requests",
            "load": f"load: {self.load.clients} clients × {self.load.upload_mb:g} MB",
            "dropout": f"dropout: {len(dropout_sets(self.dropout))} sets and an outage",
        }
        return "; ".join(sizes[part] for part in self.parts)

    @classmethod
    def smoke(cls, parts: Sequence[str] = PARTS) -> ReliabilityConfig:
        """Every part at a few trials: what CI runs (tests/test_reliability_smoke.py)."""
        return cls(
            parts=tuple(parts),
            kill=KillConfig(trials=5, default_trials=0),
            fuzz=FuzzConfig(requests=300),
            load=LoadConfig(clients=8, upload_mb=1.0, retry_after=1.0, settle_s=0.5),
            dropout=DropoutConfig(
                # 3 s: each member of a set must share within it, on a loaded 2-core
                # machine (the no-quorum set waits 10 of them before it aborts)
                members=3,
                threshold=2,
                every_set=False,
                share_timeout=3.0,
                outage_extra=2.0,
            ),
            label="smoke",
        )


@dataclass(frozen=True)
class ReliabilityReport:
    label: str
    sizes: str
    environment: dict[str, Any]
    parts: dict[str, PartFigures]
    duration_s: float

    @property
    def figures(self) -> list[Figure]:
        # in the harness's own order, whatever order the parts ran in
        parts = [self.parts[name] for name in PARTS if name in self.parts]
        return [figure for part in parts for figure in part.figures()]

    @property
    def met(self) -> bool:
        """Every figure with a target meets it."""
        return all(figure.met is not False for figure in self.figures)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(
            {
                "schema": SCHEMA,
                "label": self.label,
                "sizes": self.sizes,
                "environment": self.environment,
                "duration_s": self.duration_s,
                "parts": {name: dataclasses.asdict(part) for name, part in self.parts.items()},
                "table": [dataclasses.asdict(figure) for figure in self.figures],
            }
        )
        return data


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null (they are not JSON); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@contextlib.contextmanager
def _task(progress: Progress | None, label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar for one part (nothing without ``progress``); yields its advance."""
    if progress is None:
        yield lambda: None
        return
    task = progress.add_task(label, total=total)
    try:
        yield lambda: progress.advance(task)
    finally:
        progress.update(task, completed=total)


def run_reliability(
    config: ReliabilityConfig,
    work: Path | None = None,
    progress: Progress | None = None,
    on_part: Callable[[ReliabilityReport], None] = lambda report: None,
) -> ReliabilityReport:
    """Run the parts of ``config`` in a scratch folder (under ``work`` if given) and
    return their figures; ``on_part`` gets the report so far after each part (so that a
    part that fails loses no other part's figures)."""
    unknown = set(config.parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    started = time.monotonic()
    results: dict[str, PartFigures] = {}

    def report() -> ReliabilityReport:
        duration = time.monotonic() - started
        return ReliabilityReport(
            config.label, config.describe(), environment(), dict(results), duration
        )

    def kill(root: Path, advance: Callable[[], None]) -> PartFigures:
        return run_kill(config.kill, root, advance)

    def fuzz(root: Path, advance: Callable[[], None]) -> PartFigures:
        return run_fuzz(config.fuzz, root, advance)

    def load(root: Path, advance: Callable[[], None]) -> PartFigures:
        return run_load(config.load, root, advance)

    def dropout(root: Path, advance: Callable[[], None]) -> PartFigures:
        return run_dropout(config.dropout, root, advance)

    runners = {
        "kill": ("kill -9 trials", config.kill.trials, kill),
        "fuzz": ("fuzz requests", config.fuzz.requests, fuzz),
        "load": ("load: clients in", config.load.clients, load),
        "dropout": ("dropout sets and outage", len(dropout_sets(config.dropout)) + 1, dropout),
    }
    with tempfile.TemporaryDirectory(prefix="he-agg-reliability-", dir=work) as scratch:
        # the parts run in the order given: the load part, which measures latency, can go
        # first while the machine is quiet
        for part in dict.fromkeys(config.parts):
            description, total, runner = runners[part]
            with _task(progress, description, total) as advance:
                results[part] = runner(Path(scratch) / part, advance)
            on_part(report())
    return report()


def markdown_table(report: ReliabilityReport) -> str:
    """The report as a heading line and one markdown table of every figure."""
    env = report.environment
    lines = [
        f"Measured {env.get('date', '?')} on {env.get('cpu', '?')} ({env.get('cores', '?')} "
        f"cores), python {env.get('python', '?')}: the {report.label} run ({report.sizes}), "
        f"{report.duration_s / 60:.1f} minutes in all.",
        "",
        "| Part | Figure | Measured | Target | Met |",
        "|---|---|---|---|---|",
    ]
    for figure in report.figures:
        met = {True: "yes", False: "**no**", None: ""}[figure.met]
        value = figure.value.replace("|", "\\|")
        lines.append(f"| {figure.part} | {figure.name} | {value} | {figure.target} | {met} |")
    return "\n".join(lines)


def write_report(report: ReliabilityReport, out: Path) -> str:
    """``out/reliability.json`` and ``out/reliability.md``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    table = markdown_table(report)
    (out / "reliability.md").write_text(table + "\n")
    return table


def update_readme(readme: Path, table: str) -> None:
    """Put ``table`` between the reliability markers of ``readme`` (which must have them)."""
    text = readme.read_text()
    head, begin, rest = text.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"{readme} has no {README_BEGIN} … {README_END} markers")
    readme.write_text(f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")

"""The torture harness (issue 11): kill -9, fuzz, load and dropout/outage sets against real
server processes over loopback. Writes reliability.json and reliability.md into --out and
prints the table; with --readme, also puts the table into benchmarks/README.md between
its reliability markers.

    python benchmarks/reliability.py                    # the full run (about 75 minutes here)
    python benchmarks/reliability.py --smoke            # every part at a few trials
    python benchmarks/reliability.py --part kill --trials 50
    python benchmarks/reliability.py --part fuzz,load,dropout
    python benchmarks/reliability.py --part load --clients 40 --upload-mb 4

The logic lives in clients/bench/reliability*.py (see their docstrings for the method).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clients.bench.reliability import (
    PARTS,
    ReliabilityConfig,
    run_reliability,
    update_readme,
    write_report,
)
from clients.harness.signals import exit_on_sigterm

HERE = Path(__file__).resolve().parent


def _config(args: argparse.Namespace) -> ReliabilityConfig:
    parts = PARTS if args.part == "all" else tuple(args.part.split(","))
    config = ReliabilityConfig.smoke(parts) if args.smoke else ReliabilityConfig(parts=parts)
    kill, fuzz, load = config.kill, config.fuzz, config.load
    if args.trials is not None:
        kill = dataclasses.replace(kill, trials=args.trials)
    if args.default_trials is not None:
        kill = dataclasses.replace(kill, default_trials=args.default_trials)
    if args.requests is not None:
        fuzz = dataclasses.replace(fuzz, requests=args.requests)
    if args.clients is not None:
        load = dataclasses.replace(load, clients=args.clients)
    if args.upload_mb is not None:
        load = dataclasses.replace(load, upload_mb=args.upload_mb)
    custom = (args.trials, args.default_trials, args.requests, args.clients, args.upload_mb)
    label = config.label if all(v is None for v in custom) else "resized"
    return dataclasses.replace(config, kill=kill, fuzz=fuzz, load=load, label=label)


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()  # its servers and members stop with it
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part",
        default="all",
        help=f"all, or some of {', '.join(PARTS)} separated by commas (default: all)",
    )
    parser.add_argument("--trials", type=int, help="kill -9 trials (default 1000; smoke 5)")
    parser.add_argument(
        "--default-trials",
        type=int,
        help="of the kill trials, how many on the default parameter set (default 10)",
    )
    parser.add_argument("--requests", type=int, help="fuzz requests (default 100,000)")
    parser.add_argument("--clients", type=int, help="load: concurrent clients (default 200)")
    parser.add_argument("--upload-mb", type=float, help="load: MB per upload (default 16)")
    parser.add_argument("--smoke", action="store_true", help="every part at a few trials")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: the system's)")
    parser.add_argument(
        "--readme", type=Path, help="also write the table into this README's markers"
    )
    args = parser.parse_args(argv)
    unknown = set(args.part.split(",")) - {*PARTS, "all"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    config = _config(args)
    # the fast parameter sets have no upload proofs on purpose: the SDK's warning about
    # that, once per participant, would bury the progress bars
    logging.getLogger("he_agg.client").setLevel(logging.ERROR)
    console = Console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        # each finished part is written at once: a later part that fails loses nothing
        report = run_reliability(
            config, args.work, progress, on_part=lambda done: write_report(done, args.out)
        )
    table = write_report(report, args.out)
    if args.readme is not None:
        update_readme(args.readme, table)
    print(table)
    return 0 if report.met else 1


if __name__ == "__main__":
    sys.exit(main())

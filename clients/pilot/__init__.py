"""The finance consortium pilot (``he-agg pilot``): banks train a credit-risk model over
he-agg, each bank its own process (``pilot_bank``), against plaintext, centralised and
bank-alone baselines; ``report`` writes the markdown, plots and JSON."""

from clients.pilot.pilot import run_pilot
from clients.pilot.pilot_data import CsvSpec, PilotDataError, load_csv, load_lending_club
from clients.pilot.results import PilotConfig, PilotResult

__all__ = [
    "CsvSpec",
    "PilotConfig",
    "PilotDataError",
    "PilotResult",
    "load_csv",
    "load_lending_club",
    "run_pilot",
]

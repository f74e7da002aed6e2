"""A whole federation on this machine, for the pilot, the simulation's ``transport="http"``,
the benchmarks and the tests: the aggregator as a uvicorn process, committee members as
``he-agg committee run`` processes, and the one builder of a test federation's spec."""

from clients.harness.local import LocalFederation
from clients.harness.server_process import ServerProcess, free_port
from clients.harness.spec import federation_spec

__all__ = ["LocalFederation", "ServerProcess", "federation_spec", "free_port"]

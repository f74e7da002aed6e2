"""The HE-overhead benchmark (``he-agg bench``): a grid of model sizes × clients through a
real aggregator, with plaintext and TenSEAL baselines measured in the same run."""

from clients.bench.bench import BenchConfig, run_bench
from clients.bench.bench_report import markdown_tables, write_bench_report

__all__ = ["BenchConfig", "markdown_tables", "run_bench", "write_bench_report"]

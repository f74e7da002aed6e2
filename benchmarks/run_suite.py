"""The benchmark suite as a script (same as ``he-agg bench``): python benchmarks/run_suite.py"""

from clients.cli import app

app(["bench", *__import__("sys").argv[1:]])

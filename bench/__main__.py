"""`python -m bench` (from the repository root): the benchmark harness's command line."""

from bench.cli import bench_app

bench_app(prog_name="python -m bench")

"""``dlc benchmark``: where a bundle's analysis time goes, per backend, precision and batch."""
from dlc_runtime.benchmark.report import markdown_table, write_outputs
from dlc_runtime.benchmark.runner import BenchmarkReport, BenchmarkRow, run_benchmark
from dlc_runtime.benchmark.synthetic import write_synthetic_video

__all__ = ["BenchmarkReport", "BenchmarkRow", "markdown_table", "run_benchmark",
           "write_outputs", "write_synthetic_video"]

"""Benchmarks: detection quality against baselines (quality.py) and speed/memory (perf.py)."""

"""Benchmarks of oaas-sdk. Each script runs its baselines in the same process and run and
reports ratios; results are written as JSON under ``benchmarks/results/``."""

"""Benchmarks of oaas-sdk, side by side with oaas-sdk2-py and plain Python objects.

``python -m benchmarks`` runs the suite (see ``docs/benchmarks.md``); ``benchmarks.micro`` is
the first micro-benchmark. This package must import nothing outside the standard library at
import time: the oaas-sdk2-py virtual environment imports :mod:`benchmarks.workload`.
"""

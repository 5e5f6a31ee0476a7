"""Runnable example services: ``python -m examples.quickstart`` (``bank``, ``telemetry``).

Each uses the configuration from the environment (``OAAS_*``), by default the embedded LMDB
store in ``./.oaas``; run one twice to see the state the first run left.
"""

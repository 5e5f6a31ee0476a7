"""``python -m oaas_sdk``: the store inspector (:mod:`oaas_sdk.cli`)."""

from .cli import main

raise SystemExit(main())

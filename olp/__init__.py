"""OLP + Role-RL: the base package every service builds on (settings, topics, model catalog,
errors, HTTP helpers, call plan, Faust transport, Kafka helpers, telemetry, feed parsers).

Layers: `schemas` and `olp` (the base) import nothing above them; the services `processors`,
`policy_store`, `ingest` and `documents` import only the base; `launcher` (the `olp` command line,
the stack launcher, the clients) sits on top. `tests/unit/test_layering.py` enforces it.
"""

__version__ = "0.1.0"

"""orch's own telemetry (issue 9): ``GET /metrics`` (the contract's JSON numbers, or the
Prometheus text; ``registry``, ``collector``, ``probes``, ``endpoint``), JSON log lines
(``logs``) and the heartbeat to a dead-man switch (``heartbeat``).

Nothing is imported here: the CLI configures logging before anything heavy loads.
"""

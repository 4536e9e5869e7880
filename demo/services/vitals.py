"""The process-level numbers every simulated service reports, and how faults bend them.

Pure functions of (profile, seed, time, faults): no I/O, no state beyond the drifts.
"""

from __future__ import annotations

from collections.abc import Set

from demo.drift import Drift
from demo.services.domain import Domain
from orch_kit import Check, Health, Status

LEAK_POINTS_PER_S = 1.5  # memory_leak: percentage points of memory per second
MEMORY_CAP = 99.0
ERROR_SPIKE_RATE = 0.20
# Mirrors the demo thresholds.  Memory only ever warns: a leaking service still serves, and
# it is the metric (not /health) that should tell orch how bad it is.
MEMORY_WARN = 85.0
ERROR_WARN = 0.05


class Vitals:
    def __init__(self, domain: Domain) -> None:
        p = domain.profile
        self.domain = domain
        self.cpu = domain.drift(*p.cpu)
        self.memory = domain.drift(*p.memory)
        self.error_rate = domain.drift(*p.error_rate)
        self.rps = domain.drift(*p.rps)
        self.latency = domain.drift(*p.latency_ms)
        self.disk = domain.drift(61, 3)
        self.db_connections = Drift(domain.rng, 6, 3)

    def memory_percent(self, t: float, leaking_for: float | None) -> float:
        value = self.memory.at(t)
        if leaking_for is not None:
            value = min(MEMORY_CAP, value + LEAK_POINTS_PER_S * max(0.0, leaking_for))
        return round(value, 2)

    def error(self, t: float, spike: bool) -> float:
        # The spike keeps the baseline's wobble so the number still looks measured.
        wobble = self.error_rate.at(t) - self.error_rate.base
        return round(ERROR_SPIKE_RATE + wobble if spike else self.error_rate.at(t), 4)

    def metrics(
        self, t: float, faults: Set[str], working: bool, leaking_for: float | None
    ) -> dict[str, float]:
        spike = "error_spike" in faults
        load = 1.0 if working else 0.05  # paused or blocked: only probes reach it
        return {
            "cpu_percent": round(self.cpu.at(t) * (1.0 if working else 0.2), 2),
            "memory_percent": self.memory_percent(t, leaking_for),
            "error_rate": self.error(t, spike),
            "requests_per_second": round(self.rps.at(t) * load, 2),
            "latency_p95_ms": round(self.latency.at(t) * (1.8 if spike else 1.0), 1),
            "disk_percent": 100.0 if "disk_full" in faults else round(self.disk.at(t), 1),
        }

    def health(self, t: float, faults: Set[str], leaking_for: float | None) -> Health:
        db = self.domain.database
        memory = self.memory_percent(t, leaking_for)
        errors = self.error(t, "error_spike" in faults)
        if "disk_full" in faults:
            disk = Check(
                "fail",
                f"No space left on device ({self.domain.data_dir} 100% used)",
                "system",
                100.0,
                "percent",
            )
        else:
            disk = Check("pass", "", "system", round(self.disk.at(t), 1), "percent")
        if "dependency_down" in faults:
            database = Check(
                "fail",
                f'connection to server at "{db.host}", port {db.port} failed: Connection refused',
                "datastore",
            )
        else:
            connections = round(self.db_connections.at(t))
            database = Check("pass", "", "datastore", connections, "connections")
        memory_level: Status = "warn" if memory >= MEMORY_WARN else "pass"
        error_level: Status = "warn" if errors >= ERROR_WARN else "pass"
        checks: dict[str, list[Check]] = {
            "memory:utilization": [
                Check(
                    memory_level,
                    f"memory at {memory:.0f}%" if memory_level == "warn" else "",
                    "system",
                    memory,
                    "percent",
                )
            ],
            "disk:utilization": [disk],
            "postgres:connections": [database],
            "errors:rate": [
                Check(
                    error_level,
                    f"error rate {errors:.2f}" if error_level == "warn" else "",
                    "component",
                    errors,
                )
            ],
            **self.domain.checks(t),
        }
        return Health.from_checks(checks)

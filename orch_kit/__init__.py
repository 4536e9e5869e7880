"""The orch project contract as a drop-in for aiohttp services.

    from orch_kit import Callbacks, mount_contract
    contract = mount_contract(app, Callbacks(health=..., metrics=..., status=..., logs=...,
                                             control=...), secret=b"...", version="1.2.3")

Depends on aiohttp and prometheus_client only (``orch_kit.signing`` on the standard library
only), so it can be copied into any service.  The wire format is in docs/contract.md.
"""

from orch_kit.auth import Authenticator
from orch_kit.contract import Contract, mount_contract, mount_control, parse_log_query
from orch_kit.logbuffer import LogBuffer
from orch_kit.model import (
    ACTIONS,
    LEVELS,
    Callbacks,
    Check,
    ControlRequest,
    Health,
    LogEntry,
    LogQuery,
    Status,
    iso,
    worst,
)
from orch_kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers, verify

__all__ = [
    "ACTIONS",
    "LEVELS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Authenticator",
    "Callbacks",
    "Check",
    "Contract",
    "ControlRequest",
    "Health",
    "LogBuffer",
    "LogEntry",
    "LogQuery",
    "Status",
    "iso",
    "mount_contract",
    "mount_control",
    "parse_log_query",
    "sign",
    "signed_headers",
    "verify",
    "worst",
]

"""The ``orch`` command line: parse arguments, then hand over to one module per command
(``orch approve|deny|approvals``: ``bot.cli_approvals``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.cli_approvals import APPROVAL_COMMANDS, approvals_command
from bot.cli_db import DB_COMMAND, add_db_parser, db_command
from bot.settings import Settings
from bot.telemetry.logs import configure_logging


def _fault_arg(text: str) -> object:
    from demo.faults import parse_fault_spec

    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orch", description="Keeps a fleet of services healthy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="projects.yml (default: $ORCH_CONFIG or demo)")

    def with_faults(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--fault",
            action="append",
            default=[],
            type=_fault_arg,
            metavar="PROJECT:FAULT@S",
            help="inject FAULT into PROJECT S seconds after start (repeatable)",
        )
        p.add_argument(
            "--for",
            dest="for_seconds",
            type=_positive,
            metavar="SECONDS",
            help="exit after this many seconds",
        )

    demo = sub.add_parser("demo", help="the simulated fleet and orch together, on a laptop")
    with_config(demo)
    with_faults(demo)
    demo.add_argument(
        "--events-jsonl",
        type=Path,
        metavar="PATH",
        help="append every bus event to PATH as one JSON line",
    )
    demo.add_argument(
        "--no-story",
        action="store_true",
        help="skip the scripted story that runs when no --fault is given",
    )

    fleet = sub.add_parser("fleet", help="only the simulated fleet")
    with_config(fleet)
    with_faults(fleet)

    run = sub.add_parser("run", help="only the orchestrator (the production shape)")
    with_config(run)
    run.add_argument(
        "--orchestrator",
        metavar="NAME",
        help="run only this orchestrator group's projects (one process per group)",
    )

    check = sub.add_parser("check-config", help="validate projects.yml")
    check.add_argument("path", nargs="?", type=Path)

    sub.add_parser("migrate", help="apply database migrations and exit")

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        decide = sub.add_parser(name, help=f"{verb} a pending action (audited as the OS user)")
        decide.add_argument("id", help="the approval id, or enough of its first characters")
        decide.add_argument("--reason", default="", help="why, for the audit log")
        with_config(decide)
    sub.add_parser("approvals", help="list the approvals waiting for a decision")
    add_db_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "config", None):
            settings = Settings.from_env({**settings.env, "ORCH_CONFIG": str(args.config)})
    except ValueError as exc:  # PORT=abc, a malformed ORCH_API_TOKENS: said in one line
        print(f"orch: {exc}", file=sys.stderr)
        return 2
    quiet = ("demo", "fleet", *APPROVAL_COMMANDS)
    configure_logging(  # ORCH_LOG_FORMAT=json: one redacted JSON object a line
        logging.WARNING if args.command in quiet else logging.INFO, settings.log_format
    )
    if args.command == "check-config":
        from bot.check_config import run as check_config

        return check_config(args.path or settings.config_path, settings.env)
    if args.command in APPROVAL_COMMANDS:
        try:
            return asyncio.run(approvals_command(args, settings))
        except OSError as exc:
            print(f"orch: {exc}", file=sys.stderr)
            return 1
    if args.command == DB_COMMAND:
        return db_command(args, settings)
    from bot import commands, event_loop

    try:
        return event_loop.run(commands.dispatch(args, settings))  # uvloop where installed
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a database that is down, a port already taken, …
        # The message is already written for people (and free of DSN passwords).
        print(f"orch: {exc}", file=sys.stderr)
        return 1

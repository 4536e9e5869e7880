"""``orch check-config [PATH]``: validate a projects.yml the way ``orch run`` would load it.

Exit 0 with a one-line summary on stdout, or 2 with one line per problem on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from bot.config_loader import ConfigError, load_config
from bot.settings import Settings

EXIT_INVALID = 2


def run(
    path: Path | None,
    env: Mapping[str, str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    # Streams are looked up at call time, not bound as defaults at import, so a redirected
    # sys.stdout (pytest's capsys, a CLI wrapper) is honoured.
    out = out or sys.stdout
    err = err or sys.stderr
    path = path or Settings.from_env(env).config_path
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        print(exc, file=err)
        count = len(exc.issues)
        print(f"{count} problem{'s' if count != 1 else ''} in {path}", file=err)
        return EXIT_INVALID
    projects, groups = len(config.projects), len(config.orchestrators)
    loose = sum(1 for p in config.projects if p.orchestrator is None)
    summary = f"ok: {_count(projects, 'project')} in {_count(groups, 'orchestrator')}"
    if loose:
        summary += f", {loose} in none"
    print(f"{summary} ({path})", file=out)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


if __name__ == "__main__":
    settings = Settings.from_env()
    sys.exit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else None, settings.env))

"""``python -m bench`` (``make bench``): fleet polling by default; ``ingest``, ``bus``, ``uptime``,
``all``, ``cleanup``: the production-backend suites. See docs/benchmarks.md."""

import sys

from bench.runner import main

sys.exit(main())

"""``python -m bench`` (``make bench``): the fleet polling benchmark; see docs/benchmarks.md."""

import sys

from bench.runner import main

sys.exit(main())

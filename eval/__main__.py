"""``python -m eval`` (``make eval``): the analysis engines on the incident scenarios."""

import sys

from eval.runner import main

sys.exit(main())

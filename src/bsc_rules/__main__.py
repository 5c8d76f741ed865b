"""``python -m bsc_rules``: the same as the ``bsc-rules`` command."""

import sys

from bsc_rules.cli import main

sys.exit(main())

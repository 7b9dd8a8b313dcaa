"""``python -m calgrpo_lib ...`` is the ``calgrpo`` command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main())

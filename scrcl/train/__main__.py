"""``python -m scrcl.train``: the training command line (what train.py runs)."""

import sys

from scrcl.train.cli import main

sys.exit(main())

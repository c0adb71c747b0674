#!/usr/bin/env python
"""Train scRCL and cluster: ``python train.py --dataset lung`` (the same as ``python -m scrcl.train``).

Every config key has a flag (``python train.py --help``); see scrcl/train/cli.py.
"""

import sys

from scrcl.train.cli import main

if __name__ == "__main__":
    sys.exit(main())

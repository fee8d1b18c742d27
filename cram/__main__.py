"""``python -m cram``: run the command-line interface."""

import sys

from cram.cli import main

sys.exit(main())

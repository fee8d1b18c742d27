import sys

from cram.cli import main

sys.exit(main())

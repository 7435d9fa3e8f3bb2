"""``python -m envbuild``: the command line."""

import sys

from envbuild.cli import main

sys.exit(main())

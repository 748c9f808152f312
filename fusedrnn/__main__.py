"""``python -m fusedrnn {demo,bench,info}``: see fusedrnn.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m nubis.train``: see nubis.train.cli."""

import sys

from nubis.train.cli import main

if __name__ == "__main__":
    sys.exit(main())

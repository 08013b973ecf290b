"""``python -m sapnet``: the ``sapnet`` command line."""

import sys

from sapnet.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

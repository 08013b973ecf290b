"""Evaluate derain methods: ``python evaluate.py --model M --dataset NAME=DIR [--metrics ...] --out DIR``.

Same as ``sapnet evaluate``; see ``python evaluate.py --help``.
"""

import sys

from sapnet.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))

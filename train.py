"""Train SAPNet / PReNet: ``python train.py [--config configs/sapnet_rain100h.yaml] [--data DIR] ...``.

Same as ``sapnet train``; see ``python train.py --help``. Multi-GPU: ``torchrun --nproc_per_node N train.py ...``.
"""

import sys

from sapnet.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

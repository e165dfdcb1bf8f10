"""DVC stage `train`: python pipelines/train.py [args] (see `ablab train --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])

"""DVC stage `preprocess`: python pipelines/preprocess.py [args] (see `ablab preprocess --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["preprocess", "--list", "data/datasets.json", *sys.argv[1:]])

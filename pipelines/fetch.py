"""DVC stage `fetch`: python pipelines/fetch.py [args] (see `ablab fetch --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["fetch", "--list", "data/datasets.json", *sys.argv[1:]])

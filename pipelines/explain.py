"""DVC stage `explain`: python pipelines/explain.py [args] (see `ablab explain --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["explain", *sys.argv[1:]])

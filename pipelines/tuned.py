"""DVC stage `tuned`: python pipelines/tuned.py (see `ablab tuned --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["tuned", *sys.argv[1:]])

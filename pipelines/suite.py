"""DVC stage `suite@<name>`: every run of one ablation suite, in one process."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["suite", *sys.argv[1:]])

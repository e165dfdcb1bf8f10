"""DVC stage `tune`: the Optuna study of the tune section (see `ablab tune --help`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])

"""DVC stage `evaluators`: the classifiers that score generated images (`ablab evaluator`)."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["evaluator", *sys.argv[1:]])

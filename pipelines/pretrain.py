"""DVC stage `pretrain`: the source networks of every suite's network-based transfer."""

import sys

from ablab.cli import main

if __name__ == "__main__":
    main(["pretrain", *sys.argv[1:]])

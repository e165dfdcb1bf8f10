"""DVC stage `datasets`: which datasets the params use -> data/datasets.json, the one thing
`fetch` and `preprocess` read of the experiments, suites and tune sections."""

from ablab.cli import main

if __name__ == "__main__":
    main(["datasets", "--write", "data/datasets.json"])

"""DVC stage `datasets`: what `fetch` and `preprocess` read of params.yaml, resolved: the
datasets in use and their mirrors -> data/datasets.json, the preprocessing knobs ->
data/preprocess.json. A change elsewhere (an epoch count, a suite) rewrites the same files, so
DVC does not fetch or preprocess again."""

from ablab.cli import main

if __name__ == "__main__":
    main(["datasets", "--write", "data/datasets.json", "--knobs", "data/preprocess.json"])

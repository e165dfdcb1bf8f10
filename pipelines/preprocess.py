"""DVC stage `preprocess`: every dataset in data/datasets.json, raw -> arrays and splits, with
the knobs in data/preprocess.json (both the `datasets` stage's). It reads no params and imports
only ablab.data, so that a change elsewhere in ablab preprocesses nothing again (`ablab
preprocess` does the same from params)."""

import json
import sys
from pathlib import Path

from ablab.data.preprocess import preprocess_dataset
from ablab.data.sources import DataError

if __name__ == "__main__":
    names = sys.argv[1:] or json.loads(Path("data/datasets.json").read_text())["datasets"]
    knobs = json.loads(Path("data/preprocess.json").read_text())
    try:
        for name in names:
            print(preprocess_dataset(name, Path("data/raw"), Path("data/processed"), knobs))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

"""DVC stage `fetch`: every dataset in data/datasets.json (the `datasets` stage's output) into
data/raw, checksum-verified. It reads no params and imports only ablab.data.sources, so that a
change elsewhere in ablab fetches nothing again (`ablab fetch` does the same from params)."""

import json
import sys
from pathlib import Path

from ablab.data.sources import DataError, fetch

if __name__ == "__main__":
    plan = json.loads(Path("data/datasets.json").read_text())
    try:
        for name in sys.argv[1:] or plan["datasets"]:
            paths = fetch(name, Path("data/raw"), base_url=plan["sources"].get(name))
            print(f"{name}: {len(paths)} files verified in data/raw/{name}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

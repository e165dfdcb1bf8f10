"""DVC stage `claims`: every claim of params.yaml's `claims:` decided by the suites' default
runs and the committed records of their full recipes -> results/claims/ (claims.md,
claims.csv); each suite's parent run tagged with the claims it decides."""

from ablab.cli import main

if __name__ == "__main__":
    main(["claims", "--write", "results/claims"])

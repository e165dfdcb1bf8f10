"""DVC stage `resolve`: what every other stage reads of params.yaml, resolved, into data/: the
datasets in use and their mirrors (datasets.json) and the preprocessing knobs (preprocess.json)
for fetch and preprocess, and one file per stage in data/resolved/ (each train@, suite@,
explain@, pretrain, tune and tuned stage depends on its own). A knob that leaves a stage's file
as it was (an epoch count an experiment sets itself, a suite's variant) does not rerun it."""

from ablab.cli import main

if __name__ == "__main__":
    main(["resolve"])

"""DVC stage `report`: tables and plots of every suite -> results/report/, and an MLflow run."""

from ablab.cli import main

if __name__ == "__main__":
    main(["report"])

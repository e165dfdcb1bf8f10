"""ablab: reproducible deep-learning ablation experiments."""

import os

# Nothing is sent or written outside the project; set before mlflow is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# one line per stage in logs, not a progress bar per downloaded artifact
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
# deterministic cuBLAS (with torch's deterministic algorithms): read when CUDA starts, so set
# before anything in ablab touches a GPU
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__version__ = "0.1.0"

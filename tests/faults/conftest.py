"""The training fixtures of tests/train (one generated dataset, one MLflow store, the
uninterrupted 20-update reference run), shared with the fault tests: made once per session."""

from train.conftest import (  # noqa: F401 - fixtures
    _no_tracking_env,
    _train_threads,
    data_root,
    mlflow_root,
    reference_run,
)

"""Experiment trackers a run's metrics also go to (config ``report_to``): TensorBoard,
MLflow, Weights & Biases, behind the ``MetricsSink`` interface. ``metrics.jsonl`` stays
the record the product reads; these are copies where teams already look.

Each tracker's package is imported only when asked for (the ``trackers`` extra) and is
configured the way its users expect: TensorBoard writes ``OUT/tensorboard``; MLflow uses
``MLFLOW_TRACKING_URI`` (default: a file store in ``OUT/mlruns``); W&B uses its own
environment (``WANDB_PROJECT``, ``WANDB_MODE=offline``, ``WANDB_API_KEY``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from trainer.errors import BadInput

TRACKERS = ("tensorboard", "mlflow", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numeric metrics (not step, time or the stage's name)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k not in ("step", "time") and isinstance(v, int | float) and not isinstance(v, bool)
        and math.isfinite(float(v))
    }  # fmt: skip


def _missing(name: str, err: ImportError) -> BadInput:
    return BadInput(
        f"report_to: {name} needs the {PACKAGES[name]} package (pip install "
        f"'gad-studio[trackers]'), or remove it from report_to ({err})"
    )


class TensorBoardSink:
    def __init__(self, out_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise _missing("tensorboard", e) from e
        self.log_dir = Path(out_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def metrics(self, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=int(record["step"]))

    def samples(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    def __init__(self, out_dir: str | Path, run_name: str, params: dict[str, Any]):
        try:
            import mlflow
        except ImportError as e:
            raise _missing("mlflow", e) from e
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # beside the run; MLflow 3 asks to opt in to its file store
            uri = (Path(out_dir) / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "gad-studio"))
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})

    def metrics(self, record: dict[str, Any]) -> None:
        clean = {k.replace("/", "."): v for k, v in scalars(record).items()}
        self.mlflow.log_metrics(clean, step=int(record["step"]))

    def samples(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.mlflow.end_run()


class WandbSink:
    def __init__(self, out_dir: str | Path, run_name: str, params: dict[str, Any]):
        try:
            import wandb
        except ImportError as e:
            raise _missing("wandb", e) from e
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "gad-studio"),
            name=run_name,
            dir=str(out_dir),
            config=params,
        )

    def metrics(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=int(record["step"]))

    def samples(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.run.finish()


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (the trackers' parameter tables)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def make(names: list[str], out_dir: str | Path, config: dict[str, Any]) -> list[Any]:
    """The sinks ``report_to`` names, in its order."""
    run_name = Path(out_dir).resolve().parent.name or "run"
    params = flat(config)
    built: list[Any] = []
    for name in names:
        if name == "tensorboard":
            built.append(TensorBoardSink(out_dir))
        elif name == "mlflow":
            built.append(MLflowSink(out_dir, run_name, params))
        elif name == "wandb":
            built.append(WandbSink(out_dir, run_name, params))
    return built

"""Experiment trackers a run's metrics also go to (config ``report_to``): TensorBoard,
MLflow, Weights & Biases, behind the ``MetricsSink`` interface. ``metrics.jsonl`` stays
the record the product reads; these are copies where teams already look.

Each tracker's package is imported only when asked for (the ``trackers`` extra) and is
configured the way its users expect: TensorBoard writes ``OUT/tensorboard``; MLflow uses
``MLFLOW_TRACKING_URI`` (default: a file store in ``OUT/mlruns``); W&B uses its own
environment (``WANDB_PROJECT``, ``WANDB_MODE=offline``, ``WANDB_API_KEY``).

Where each went is written to ``OUT/trackers.json`` (``where``), for the job page's links.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainer.errors import BadInput

TRACKERS = ("tensorboard", "mlflow", "wandb")
TRACKERS_FILE = "trackers.json"
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

    def where(self) -> str:
        return self.log_dir.name

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
        self.uri = uri
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "gad-studio"))
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})

    def metrics(self, record: dict[str, Any]) -> None:
        clean = {k.replace("/", "."): v for k, v in scalars(record).items()}
        self.mlflow.log_metrics(clean, step=int(record["step"]))

    def samples(self, record: dict[str, Any]) -> None:
        pass

    def where(self) -> dict[str, Any]:
        info = self.run.info
        uri = _public(self.uri)
        web = uri.startswith(("http://", "https://"))
        url = f"{uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
        return {
            "tracking_uri": uri,
            "experiment_id": info.experiment_id,
            "run_id": info.run_id,
            "url": url if web else None,  # a file store has no page to link to
        }

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

    def where(self) -> dict[str, Any]:
        return {
            "project": self.run.project,
            "run_id": self.run.id,
            "url": self.run.url,  # None offline: ``wandb sync`` the run's folder first
            "offline": self.run.offline,
        }

    def close(self) -> None:
        self.run.finish()


def _public(uri: str) -> str:
    """The URI without a user name or password (the file is shown on the job page)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
    built: dict[str, Any] = {}
    for name in names:
        if name == "tensorboard":
            built[name] = TensorBoardSink(out_dir)
        elif name == "mlflow":
            built[name] = MLflowSink(out_dir, run_name, params)
        elif name == "wandb":
            built[name] = WandbSink(out_dir, run_name, params)
    write_where(out_dir, built)
    return list(built.values())


def write_where(out_dir: str | Path, sinks: dict[str, Any]) -> None:
    """``OUT/trackers.json``: each tracker's run (``where()``), e.g. ``{"tensorboard":
    "tensorboard", "mlflow": {"tracking_uri", "experiment_id", "run_id", "url"}, "wandb":
    {"project", "run_id", "url", "offline"}}``. Replaced whole: the web may read it now."""
    path = Path(out_dir) / TRACKERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({name: sink.where() for name, sink in sinks.items()}, indent=1))
    tmp.replace(path)


# ------------------------------------------------------------------------- sync offline


SOURCE_TAG = "gad.source_run"  # on a synced run: the offline run it came from


def sync_mlflow(store: str | Path, experiment: str) -> list[str]:
    """Copy the runs of an offline MLflow file store (a sandboxed run's ``OUT/mlruns``)
    to the tracking server ``MLFLOW_TRACKING_URI`` names, into ``experiment``: params,
    every metric's full history, tags and status. A run already copied (found by its
    ``gad.source_run`` tag) is copied again only while it was unfinished there, so the
    worker can sync while a job runs and once more after. Returns the server's run ids."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise _missing("mlflow", e) from e
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    source = MlflowClient(tracking_uri=Path(store).resolve().as_uri())
    target = MlflowClient()  # MLFLOW_TRACKING_URI and its credentials, from the env
    found = target.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else target.create_experiment(experiment)
    synced = []
    experiments = [e.experiment_id for e in source.search_experiments()]
    for run in source.search_runs(experiments):
        origin = run.info.run_id
        previous = target.search_runs(
            [experiment_id], filter_string=f"tags.`{SOURCE_TAG}` = '{origin}'"
        )
        if previous and previous[0].info.status == "FINISHED":
            synced.append(previous[0].info.run_id)
            continue
        for stale in previous:  # an earlier copy of a run that went on since
            target.delete_run(stale.info.run_id)
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.source")}
        tags[SOURCE_TAG] = origin
        copy = target.create_run(experiment_id, run_name=run.info.run_name, tags=tags)
        copy_id = copy.info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):  # the REST API's limit per batch
            target.log_batch(copy_id, params=params[i : i + 100])
        metrics = [
            Metric(key, m.value, m.timestamp, m.step)
            for key in run.data.metrics
            for m in source.get_metric_history(origin, key)
        ]
        for i in range(0, len(metrics), 1000):
            target.log_batch(copy_id, metrics=metrics[i : i + 1000])
        target.log_batch(copy_id, tags=[RunTag(SOURCE_TAG, origin)])
        target.set_terminated(copy_id, status=run.info.status, end_time=run.info.end_time)
        synced.append(copy_id)
    return synced

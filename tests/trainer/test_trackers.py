"""report_to: a run's metrics also go to TensorBoard and MLflow, read back from their
own files (W&B is built the same way; its package is not installed here)."""

from __future__ import annotations

import pytest

from tests.trainer.test_recipes import make_cfg, read_jsonl
from trainer.config import validate_dict


def test_tensorboard_and_mlflow_get_every_step(tmp_path, tiny_model, prompts_file, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.recipes.seqkd import run_seqkd

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_cfg(
        tmp_path, tiny_model, prompts_file, method="seqkd", report_to=["tensorboard", "mlflow"]
    )
    assert run_seqkd(cfg) == "finished"
    expected = {r["step"]: r["g/sft_loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    assert len(expected) >= 2

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    board = {e.step: e.value for e in events.Scalars("g/sft_loss")}
    assert board.keys() == expected.keys()
    assert all(board[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("gad-studio")
    (run,) = client.search_runs([experiment.experiment_id])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "g.sft_loss")}
    assert history.keys() == expected.keys()
    assert run.data.params["seqkd.lr"] == "0.001" and run.data.params["method"] == "seqkd"


def test_an_unknown_tracker_is_named():
    _, errors = validate_dict(
        {"student": "x", "train_file": "p", "output_dir": "o", "report_to": ["tensorbored"]}
    )
    assert ("report_to", "report_to: 'tensorbored' is not a tracker; use tensorboard, mlflow "
            "or wandb") in errors  # fmt: skip

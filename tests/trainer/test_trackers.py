"""report_to: a run's metrics also go to TensorBoard, MLflow and W&B (offline), read back
from their own files; ``trackers.json`` says where each went (for the job page)."""

from __future__ import annotations

import json
import struct

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

    where = json.loads((tmp_path / "run" / "trackers.json").read_text())
    assert where["tensorboard"] == "tensorboard"
    assert where["mlflow"]["run_id"] == run.info.run_id
    assert where["mlflow"]["url"] is None  # a file store has no page to link to


def wandb_records(path):
    """The records of a ``.wandb`` file, as wandb's own protobuf ``Record``s. The file is a
    LevelDB-style log (wandb-core's ``leveldb`` writer; the SDK ships no reader since the
    Python backend went): a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def test_wandb_offline_gets_every_step_and_says_where(
    tmp_path, tiny_model, prompts_file, monkeypatch
):
    from trainer.recipes.seqkd import run_seqkd

    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "gad-test")
    for key, folder in [
        ("WANDB_DIR", "wandb"),
        ("WANDB_CONFIG_DIR", "wandb-config"),
        ("WANDB_CACHE_DIR", "wandb-cache"),
        ("WANDB_DATA_DIR", "wandb-data"),
    ]:
        monkeypatch.setenv(key, str(tmp_path / folder))  # fmt: skip
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, method="seqkd", report_to=["wandb"])
    assert run_seqkd(cfg) == "finished"
    expected = {r["step"]: r["g/sft_loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    assert len(expected) >= 2

    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(log)
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            item = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)  # "g/…" is nested
                for i in record.history.item
            }
            history[item["_step"]] = item["g/sft_loss"]
    assert history.keys() == expected.keys()
    assert all(history[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["seqkd.lr"] == 0.001 and config["method"] == "seqkd"

    where = json.loads((tmp_path / "run" / "trackers.json").read_text())
    assert where == {
        "wandb": {"project": "gad-test", "run_id": run.run_id, "url": None, "offline": True}
    }


def test_an_unknown_tracker_is_named():
    _, errors = validate_dict(
        {"student": "x", "train_file": "p", "output_dir": "o", "report_to": ["tensorbored"]}
    )
    assert ("report_to", "report_to: 'tensorbored' is not a tracker; use tensorboard, mlflow "
            "or wandb") in errors  # fmt: skip

"""Config: paper defaults, YAML round trip, --set overrides, validation messages."""

import dataclasses

import pytest

from trainer import config as C
from trainer.errors import BadInput

REQUIRED = {"student": "m", "train_file": "p.jsonl", "output_dir": "out"}


def test_defaults_are_the_papers():
    cfg = C.from_dict(dict(REQUIRED))
    assert (cfg.method, cfg.batch_size, cfg.group_size) == ("gad", 256, 8)
    assert (cfg.temperature, cfg.top_p) == (0.8, 1.0)
    assert (cfg.max_prompt_tokens, cfg.max_response_tokens) == (2048, 1536)
    assert (cfg.warmup.epochs, cfg.warmup.d_only_steps, cfg.warmup.lr) == (1, 10, 1e-6)
    assert (cfg.gad.epochs, cfg.gad.lr, cfg.gad.kl_coef) == (2, 1e-6, 0.001)
    assert (cfg.gad.clip_low, cfg.gad.clip_high, cfg.gad.dual_clip) == (0.2, 0.2, 3.0)
    assert (cfg.seqkd.epochs, cfg.seqkd.lr) == (3, 5e-6)
    assert (cfg.disc.loss, cfg.disc.update, cfg.disc.lr) == ("bradley_terry", "on_policy", 1e-6)
    assert (cfg.optim.weight_decay, cfg.optim.grad_clip) == (0.01, 0.2)
    assert (cfg.save_every, cfg.sample_every, cfg.micro_batch_tokens) == (50, 50, 16384)
    assert cfg.lora is None and cfg.resume == "auto" and cfg.rollout.backend == "hf"


def test_every_field_has_help_text():
    specs = C.field_specs()
    assert {"warmup.d_only_steps", "disc.update", "lora.r", "rollout.backend"} <= {
        s["key"] for s in specs
    }
    assert all(s.get("help") for s in specs), [s["key"] for s in specs if not s.get("help")]
    for cls in (C.TrainConfig, C.GadConfig, C.DiscConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls))


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    cfg = C.from_dict({**REQUIRED, "gad": {"kl_coef": 0.01}})
    C.save_config(cfg, path)
    again = C.load_config(path, ["gad.lr=2e-6", "lora.r=8", "max_steps=3", "disc.update=frozen"])
    assert again.gad.kl_coef == 0.01 and again.gad.lr == 2e-6
    assert again.lora is not None and again.lora.r == 8 and again.lora.alpha == 32
    assert again.max_steps == 3 and again.disc.update == "frozen"
    assert C.load_config(path) == cfg


def test_validation_names_key_and_range():
    cfg, errors = C.validate_dict({**REQUIRED, "group_size": 1, "gad": {"clip_low": 2}})
    assert cfg is None
    keys = dict(errors)
    assert "group_size: must be >= 2 (got 1)" in keys["group_size"]
    assert "must be <= 1.0" in keys["gad.clip_low"]


def test_validation_checks_types_and_choices():
    _, errors = C.validate_dict({**REQUIRED, "batch_size": "many", "disc": {"loss": "hinge"}})
    keys = dict(errors)
    assert "must be an integer" in keys["batch_size"]
    assert "bradley_terry, cross_entropy" in keys["disc.loss"]


def test_unknown_keys_list_the_valid_ones():
    _, errors = C.validate_dict({**REQUIRED, "gad": {"kl": 0.1}, "bogus": 1})
    keys = dict(errors)
    assert "valid keys" in keys["gad.kl"] and "gad.kl_coef" in keys["gad.kl"]
    assert "group_size" in keys["bogus"]


def test_missing_required_keys_are_errors():
    _, errors = C.validate_dict({})
    assert {"student", "train_file", "output_dir"} <= {k for k, _ in errors}


def test_the_off_policy_discriminator_is_the_papers_by_default_and_must_have_trained():
    """disc.update: frozen trains D in the warmup as GAD does, then freezes it (Fig. 6):
    no extra D epochs by default. With no D warmup either, D would never learn."""
    config, errors = C.validate_dict({**REQUIRED, "disc": {"update": "frozen"}})
    assert errors == [] and config.disc.frozen_epochs == 0
    _, errors = C.validate_dict(
        {**REQUIRED, "disc": {"update": "frozen"}, "warmup": {"discriminator": False}}
    )
    assert errors and errors[0][0] == "disc.frozen_epochs" and "never-trained" in errors[0][1]
    config, errors = C.validate_dict(
        {**REQUIRED, "disc": {"update": "frozen", "frozen_epochs": 2},
         "warmup": {"discriminator": False}}
    )  # fmt: skip
    assert errors == [] and config.disc.frozen_epochs == 2


def test_vllm_refuses_a_temperature_above_two_and_the_config_says_so_first():
    """vllm 0.32.0, vllm/sampling_params.py:667: "temperature must be in [0, 2]"."""
    _, errors = C.validate_dict({**REQUIRED, "temperature": 2.5, "rollout": {"backend": "vllm"}})
    assert errors == [
        ("temperature", "temperature: 2.5 is above 2, which rollout.backend: vllm refuses; "
         "lower it, or use rollout.backend: hf"),
    ]  # fmt: skip
    _, errors = C.validate_dict({**REQUIRED, "temperature": 2.5})  # transformers takes it
    assert errors == []


def test_bad_override_and_bad_file_raise_bad_input(tmp_path):
    with pytest.raises(BadInput, match="key.sub=value"):
        C.apply_overrides({}, ["nokey"])
    with pytest.raises(BadInput, match="cannot read config file"):
        C.load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("group_size: 1\nstudent: m\ntrain_file: a\noutput_dir: o\n")
    with pytest.raises(BadInput, match="bad.yaml.*group_size"):
        C.load_config(tmp_path / "bad.yaml")

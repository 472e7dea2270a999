"""GAD and SeqKD runs on the tiny model: stages, update order, switches, outputs."""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from trainer.config import from_dict
from trainer.recipes import gad as gad_recipe
from trainer.recipes.gad import run_gad
from trainer.recipes.seqkd import run_seqkd

pytestmark = pytest.mark.slow


def make_cfg(tmp_path, model, prompts, **over):
    """4 prompts, batch 2: warmup 2 steps (D alone at step 1), then 2 GAD steps."""
    data = {
        "method": "gad",
        "student": str(model),
        "train_file": str(prompts),
        "output_dir": str(tmp_path / "run"),
        "batch_size": 2,
        "group_size": 3,
        "max_prompt_tokens": 48,
        "max_response_tokens": 6,
        "micro_batch_tokens": 128,
        "save_every": 100,
        "sample_every": 1,
        "warmup": {"epochs": 1, "d_only_steps": 1, "lr": 1e-3},
        "gad": {"epochs": 1, "lr": 1e-3, "kl_coef": 0.1},
        "seqkd": {"epochs": 1, "lr": 1e-3},
        "disc": {"lr": 1e-3},
        "export_dtype": "float32",  # tests compare exported weights exactly
    }
    for key, value in over.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(data)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_finite(record):
    return all(math.isfinite(v) for k, v in record.items() if isinstance(v, float) and k != "time")


def test_gad_run_goes_through_warmup_and_adversarial_stage(tmp_path, tiny_model, prompts_file):
    cfg = make_cfg(tmp_path, tiny_model, prompts_file)
    assert run_gad(cfg) == "finished"
    out = tmp_path / "run"
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [(m["step"], m["stage"]) for m in metrics] == [
        (1, "warmup"),
        (2, "warmup"),
        (3, "gad"),
        (4, "gad"),
    ]
    assert all(all_finite(m) and "time" in m for m in metrics)
    # D alone at step 1; G's SFT from step 2; no RL metrics in warmup, no SFT in GAD
    assert "d/loss" in metrics[0] and "g/sft_loss" not in metrics[0] and "g/lr" not in metrics[0]
    assert "g/sft_loss" in metrics[1] and "reward/mean" not in metrics[1]
    for m in metrics[2:]:
        assert {
            "g/pg_loss",
            "g/kl",
            "g/entropy",
            "g/clip_frac",
            "reward/mean",
            "d/grad_norm",
        } <= set(m)
        assert "g/sft_loss" not in m and m["g/lr"] == 1e-3
    assert {"len/student_mean", "len/student_max", "len/teacher_mean", "len/truncated_frac"} <= set(
        metrics[3]
    )
    samples = read_jsonl(out / "samples.jsonl")
    gad_samples = [s for s in samples if s["stage"] == "gad"]
    assert gad_samples and all(len(s["rewards"]) == 3 == len(s["advantages"]) for s in gad_samples)
    assert (out / "config.yaml").exists()
    assert (out / "final").resolve() == (out / "checkpoints" / "step-4" / "student").resolve()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    assert AutoTokenizer.from_pretrained(out / "final").chat_template
    assert (out / "checkpoints" / "step-4" / "discriminator" / "score_head.safetensors").exists()


def test_seqkd_run_trains_on_teacher_answers_only(tmp_path, tiny_model, prompts_file):
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, method="seqkd", seqkd__epochs=2)
    assert run_seqkd(cfg) == "finished"
    out = tmp_path / "run"
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["stage"] for m in metrics] == ["seqkd"] * 4
    assert all(all_finite(m) and "g/sft_loss" in m for m in metrics)
    assert not any(k.startswith(("d/", "reward/")) for m in metrics for k in m)
    assert metrics[-1]["g/sft_loss"] < metrics[0]["g/sft_loss"]
    assert not (out / "checkpoints" / "step-4" / "discriminator").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "final")


def test_gradient_checkpointing_gives_the_same_training(tmp_path, tiny_model, prompts_file):
    runs = []
    for gc in (False, True):
        cfg = make_cfg(tmp_path / str(gc), tiny_model, prompts_file, gradient_checkpointing=gc)
        run_gad(cfg)
        runs.append(_comparable(read_jsonl(tmp_path / str(gc) / "run" / "metrics.jsonl")))
    _assert_same_records(*runs, rel=1e-5, abs_tol=1e-6)


def _student_weights(path):
    return load_file(str(path / "model.safetensors"))


def test_discriminator_alone_for_the_first_steps(tmp_path, tiny_model, prompts_file):
    cfg = make_cfg(
        tmp_path, tiny_model, prompts_file, warmup__d_only_steps=2, gad__epochs=0, save_every=2
    )
    run_gad(cfg)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [("g/grad_norm" in m, "d/grad_norm" in m) for m in metrics] == [(False, True)] * 2
    before = _student_weights(tiny_model)
    after = _student_weights(tmp_path / "run" / "checkpoints" / "step-2" / "student")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rewards_come_from_discriminator_before_its_update(
    tmp_path, tiny_model, prompts_file, monkeypatch
):
    from trainer.recipes.setup import build_run
    from trainer.recipes.updates import disc_rows, score

    cfg = make_cfg(tmp_path, tiny_model, prompts_file, warmup__epochs=0)
    run, _ = build_run(cfg, None, with_disc=True)
    gad_recipe.start_adversarial_stage(run)
    seen = {}
    real_sample, real_adv = gad_recipe.sample, gad_recipe.grpo_advantages
    monkeypatch.setattr(gad_recipe, "sample", lambda r, b: seen.setdefault("ro", real_sample(r, b)))
    monkeypatch.setattr(
        gad_recipe, "grpo_advantages", lambda rw, **kw: real_adv(seen.setdefault("rw", rw), **kw)
    )
    disc_before = copy.deepcopy(run.disc)
    batch = run.examples[:2]
    gad_recipe.adversarial_step(run, batch)
    prompts, responses = disc_rows(batch, seen["ro"])
    after = score(run, prompts, responses)[2:].view(2, 3)
    run.disc = disc_before
    before = score(run, prompts, responses)[2:].view(2, 3)
    torch.testing.assert_close(seen["rw"], before)
    assert not torch.allclose(seen["rw"], after)  # D did move in this step
    run.sink.close()


def test_on_policy_discriminator_keeps_learning_in_the_adversarial_stage(
    tmp_path, tiny_model, prompts_file
):
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, save_every=2)
    run_gad(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    warm = load_file(str(ckpts / "step-2" / "discriminator" / "score_head.safetensors"))
    end = load_file(str(ckpts / "step-4" / "discriminator" / "score_head.safetensors"))
    assert not all(torch.equal(warm[k], end[k]) for k in warm)
    assert "d/grad_norm" in read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]


def test_frozen_discriminator_is_the_papers_off_policy_sequence(tmp_path, tiny_model, prompts_file):
    """Fig. 6: GAD's warmup (G's SFT, D on its samples), then G's RL against D frozen: the
    one difference from GAD is that D stops learning. The stages are named in the
    metrics."""
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, disc__update="frozen", save_every=2)
    assert run_gad(cfg) == "finished"
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    stages = [m["stage"] for m in metrics]
    assert stages == ["warmup", "warmup", "gad", "gad"]
    for m in metrics[:2]:  # as in GAD: D learns on the student's samples beside G's SFT
        assert "d/grad_norm" in m
    for m in metrics[2:]:  # G's RL; D scores but never learns
        assert "reward/mean" in m and "g/pg_loss" in m and "d/grad_norm" not in m

    assert not moved(tmp_path, "discriminator", 2, 4)
    assert moved(tmp_path, "student", 2, 4)


def test_our_variant_adds_epochs_of_d_alone_on_the_warmed_up_student(
    tmp_path, tiny_model, prompts_file
):
    """disc.frozen_epochs > 0 (ours, not the paper's): after the warmup, D alone on the
    fixed warmed-up student's samples, then G's RL against D frozen."""
    cfg = make_cfg(
        tmp_path, tiny_model, prompts_file, disc__update="frozen", disc__frozen_epochs=1,
        save_every=2,
    )  # fmt: skip
    assert run_gad(cfg) == "finished"
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    stages = [m["stage"] for m in metrics]
    assert stages == ["warmup", "warmup", "disc", "disc", "gad", "gad"]
    for m in metrics[2:4]:  # D alone, on the warmed-up student's samples
        assert "d/grad_norm" in m and not any(k.startswith("g/") for k in m)
    for m in metrics[4:]:  # G's RL; D scores but never learns
        assert "reward/mean" in m and "g/pg_loss" in m and "d/grad_norm" not in m

    assert moved(tmp_path, "discriminator", 2, 4)
    assert not moved(tmp_path, "discriminator", 4, 6)
    assert not moved(tmp_path, "student", 2, 4)  # fixed G
    assert moved(tmp_path, "student", 4, 6)


WEIGHTS = {"discriminator": "score_head.safetensors", "student": "model.safetensors"}


def moved(tmp_path, part: str, first: int, then: int) -> bool:
    """Whether ``part``'s saved weights changed between the checkpoints of two steps."""

    def weights(step):
        path = tmp_path / "run" / "checkpoints" / f"step-{step}" / part / WEIGHTS[part]
        return load_file(str(path))

    a, b = weights(first), weights(then)
    return not all(torch.equal(a[k], b[k]) for k in a)


def test_gs_optimizer_goes_on_from_the_warmup_at_the_gad_lr(
    tmp_path, tiny_model, prompts_file, monkeypatch
):
    """As the reference scripts do (their GAD run resumes the warmup's checkpoint with its
    optimizer state): the AdamW moments of the warmup's SFT carry into GAD."""
    seen = []
    real = gad_recipe.start_adversarial_stage

    def start(run):
        before = (id(run.g_opt), len(run.g_opt.state))
        real(run)
        seen.append(
            (before, (id(run.g_opt), len(run.g_opt.state)), run.g_opt.param_groups[0]["lr"])
        )

    monkeypatch.setattr(gad_recipe, "start_adversarial_stage", start)
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, warmup__d_only_steps=0, gad__lr=3e-4)
    assert run_gad(cfg) == "finished"
    [(before, after, lr)] = seen
    assert before[1] > 0 and after == before and lr == 3e-4


def test_kl_reference_is_the_warmed_up_student(tmp_path, tiny_model, prompts_file, monkeypatch):
    refs = []
    real = gad_recipe.frozen_copy
    monkeypatch.setattr(gad_recipe, "frozen_copy", lambda m, d: refs.append(real(m, d)) or refs[-1])
    run_gad(make_cfg(tmp_path, tiny_model, prompts_file))
    assert len(refs) == 1
    warmed = _student_weights(tmp_path / "run" / "checkpoints" / "step-2" / "student")
    initial = _student_weights(tiny_model)
    ref = {k: v for k, v in refs[0].state_dict().items() if k in warmed}
    assert ref and all(torch.equal(ref[k], warmed[k]) for k in ref)
    assert not all(torch.equal(ref[k], initial[k]) for k in ref)


def _comparable(records):
    return [
        {k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")} for r in records
    ]


def _assert_same_records(got, expected, rel, abs_tol):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for k, v in e.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=rel, abs=abs_tol), (g["step"], k)
            else:
                assert g[k] == v, (g["step"], k)


LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_model, prompts_file, lora):
    full = make_cfg(tmp_path / "a", tiny_model, prompts_file, gad__epochs=2, lora=lora)
    assert run_gad(full) == "finished"
    expected = _comparable(read_jsonl(tmp_path / "a" / "run" / "metrics.jsonl"))
    assert len(expected) == 6
    # stop inside the warmup (step 1), inside the GAD stage (step 4), then run to the end
    for max_steps in (1, 4, None):
        part = make_cfg(
            tmp_path / "b", tiny_model, prompts_file, gad__epochs=2, max_steps=max_steps, lora=lora
        )
        run_gad(part)
    got = _comparable(read_jsonl(tmp_path / "b" / "run" / "metrics.jsonl"))
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    _assert_same_records(got, expected, rel=0, abs_tol=0)  # bit-identical on CPU
    if lora:  # a merged student and the adapter alone, which merge to the same weights
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        final = (tmp_path / "b" / "run" / "final").resolve()
        merged = AutoModelForCausalLM.from_pretrained(final).state_dict()
        adapter = final.parent / "student-adapter"
        assert (adapter / "adapter_config.json").exists()
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        again = PeftModel.from_pretrained(base, adapter).merge_and_unload().state_dict()
        assert merged.keys() == again.keys()
        for k in merged:
            torch.testing.assert_close(merged[k], again[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("switch", ["generator", "discriminator"])
def test_warmup_ablation_switches(tmp_path, tiny_model, prompts_file, switch):
    cfg = make_cfg(tmp_path, tiny_model, prompts_file, **{f"warmup__{switch}": False})
    run_gad(cfg)
    warmup = [m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if m["stage"] == "warmup"]
    assert len(warmup) == 2
    if switch == "generator":  # D only: no G update, samples still drawn
        assert all("g/grad_norm" not in m and "d/grad_norm" in m for m in warmup)
    else:  # G's SFT from the first step (no D to wait for), no sampling
        assert all("g/sft_loss" in m and "d/loss" not in m for m in warmup)
        assert all("len/student_mean" not in m for m in warmup)


def test_micro_batching_does_not_change_the_updates(tmp_path, tiny_model, prompts_file):
    results = []
    for budget in (16, 4096):  # 16 tokens: every sequence alone; 4096: one forward
        cfg = make_cfg(tmp_path / str(budget), tiny_model, prompts_file, micro_batch_tokens=budget)
        run_gad(cfg)
        results.append(_comparable(read_jsonl(tmp_path / str(budget) / "run" / "metrics.jsonl")))
    # Only summation order differs. D's raw scores share its head bias, whose gradient is
    # zero under the Bradley-Terry loss: Adam turns rounding noise into lr-sized moves of
    # every score alike, so compare the shift-invariant margin instead.
    _assert_same_records(*map(_shift_invariant, results), rel=1e-4, abs_tol=1e-6)


def _shift_invariant(records):
    out = []
    for r in records:
        r = dict(r)
        if "d/teacher_score" in r:
            r["d/margin"] = r.pop("d/teacher_score") - r.pop("d/student_score")
        r.pop("reward/mean", None)
        out.append(r)
    return out

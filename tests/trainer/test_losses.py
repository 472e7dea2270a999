"""Each loss against hand-computed values and the sign of its gradient."""

import math

import pytest
import torch

from trainer import losses


def test_bradley_terry_pairs_teacher_with_every_sample():
    teacher = torch.tensor([1.0], requires_grad=True)
    student = torch.tensor([[0.0, 2.0]], requires_grad=True)
    loss = losses.bradley_terry_loss(teacher, student)
    # diffs 1 and -1: (-log sigmoid(1) - log sigmoid(-1)) / 2
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert teacher.grad.item() < 0  # descent raises the teacher's score
    assert (student.grad > 0).all()  # ... and lowers every sample's score


def test_bradley_terry_averages_over_prompts_and_samples():
    teacher = torch.tensor([0.0, 0.0])
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert losses.bradley_terry_loss(teacher, student).item() == pytest.approx(math.log(2))


def test_cross_entropy_disc_loss_hand_values_and_gradient_sign():
    """GAD.md: mean_b[-log σ(t_b)] + mean_{b,i}[-log(1 - σ(s_bi))], each side its own mean."""
    teacher = torch.tensor([2.0, 0.5], requires_grad=True)
    student = torch.tensor([[-1.0, 1.0, 0.0], [3.0, -2.0, 0.5]], requires_grad=True)
    loss = losses.cross_entropy_disc_loss(teacher, student)
    sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log sigmoid(x)
    teacher_side = (sp(2.0) + sp(0.5)) / 2
    student_side = sum(sp(-s) for s in (-1.0, 1.0, 0.0, 3.0, -2.0, 0.5)) / 6  # -log(1-σ(s))
    assert loss.item() == pytest.approx(teacher_side + student_side, rel=1e-6)
    loss.backward()
    assert (teacher.grad < 0).all() and (student.grad > 0).all()
    # Both sides weigh the same: the teacher side's gradient is not diluted by N.
    assert teacher.grad.abs().sum().item() == pytest.approx(
        sum(1 / (1 + math.exp(t)) for t in (2.0, 0.5)) / 2, rel=1e-6
    )


def test_disc_accuracy_counts_pairs():
    acc = losses.disc_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0], [-1.0, -2.0]]))
    assert acc.item() == pytest.approx(0.75)


def test_grpo_advantages_are_normalized_per_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 10.0, 20.0]])
    adv = losses.grpo_advantages(rewards)
    # group 0: mean 2, unbiased std 1; group 1: constant -> 0; group 2: std 10
    expected = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)


def test_grpo_advantages_without_std_norm_only_center():
    adv = losses.grpo_advantages(torch.tensor([[0.0, 10.0, 20.0]]), std_norm=False)
    torch.testing.assert_close(adv, torch.tensor([[-10.0, 0.0, 10.0]]))


def test_policy_loss_on_policy_is_minus_token_mean_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = losses.policy_loss(logp, logp.detach(), adv, mask)
    # ratio 1: per-token -A -> (-1 - 1 + 1) / 3 tokens
    assert loss.item() == pytest.approx(-1.0 / 3.0)
    assert stats["clip_frac"].item() == 0.0
    loss.backward()
    # descent raises log-probs of positive-advantage tokens, lowers negative ones
    assert (logp.grad[0] < 0).all() and logp.grad[1, 0] > 0 and logp.grad[1, 1] == 0


@pytest.mark.parametrize(
    "adv, ratio, expected, has_grad",
    [
        (1.0, 1.5, -1.2, False),  # positive A, ratio above 1+clip: clipped, no gradient
        (1.0, 0.5, -0.5, True),  # positive A, ratio below: unclipped (pessimistic max)
        (-1.0, 0.5, 0.8, False),  # negative A, ratio below 1-clip: clipped
        (-1.0, 2.0, 2.0, True),  # negative A, big ratio under the dual cap: unclipped
        (-1.0, 5.0, 3.0, False),  # negative A, ratio past c=3: dual clip caps at -3A
    ],
)
def test_policy_loss_clip_and_dual_clip(adv, ratio, expected, has_grad):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    loss, _ = losses.policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert (logp.grad.abs().item() > 0) == has_grad


def test_policy_loss_reports_clip_fractions():
    logp = torch.log(torch.tensor([[1.5, 1.0], [5.0, 1.0]]))
    _, stats = losses.policy_loss(
        logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), torch.ones(2, 2)
    )
    # (0,0): PPO clip active; (1,0): the dual clip caps it instead
    assert stats["clip_frac"].item() == pytest.approx(0.25)
    assert stats["dual_clip_frac"].item() == pytest.approx(0.25)


def test_k3_kl_values_gradient_and_clamp():
    logp = torch.tensor([0.0, -1.0, 0.0], requires_grad=True)
    ref = torch.tensor([math.log(0.5), -1.0, 30.0])
    kl = losses.k3_kl(logp, ref)
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    assert kl[1].item() == 0.0
    assert kl[2].item() == 10.0  # clamped, finite
    kl[0].backward()
    assert logp.grad[0].item() > 0  # logp above ref: descent moves it back down


def test_k3_kl_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(100, generator=g), torch.randn(100, generator=g)
    assert (losses.k3_kl(logp, ref) >= 0).all()


def test_sft_loss_is_token_mean_nll_over_mask():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -100.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss = losses.sft_loss(logp, mask)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert (logp.grad[mask.bool()] < 0).all() and logp.grad[1, 1] == 0

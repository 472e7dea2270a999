"""GAD's losses as pure functions on tensors (GAD.md "Losses"; DESIGN.md "Losses API").

Shapes: B prompts, N student samples per prompt, T response tokens. Masks are 1 on real
response tokens and 0 on padding. Every "token-mean" is over all unmasked tokens of the
whole input, so a caller that accumulates micro-batches rescales by its share of tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over positions where `mask` is 1 (0 when the mask is empty).

    values, mask: same shape [*] -> scalar.
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def bradley_terry_loss(teacher_scores: Tensor, student_scores: Tensor) -> Tensor:
    """Discriminator loss: each teacher answer against *each* of its prompt's N samples.

    teacher_scores [B], student_scores [B, N] -> scalar
    `mean_{b,i} -log sigmoid(D(y_t,b) - D(y_s,b,i))`; no margin, no regularizer.
    """
    diff = teacher_scores.unsqueeze(1) - student_scores
    return -F.logsigmoid(diff).mean()


def cross_entropy_disc_loss(teacher_scores: Tensor, student_scores: Tensor) -> Tensor:
    """Ablation D loss (paper Table 4): the standard GAN discriminator loss, teacher label
    1, student label 0, each side averaged on its own so that both weigh the same:

        L_D = mean_b[-log sigmoid(t_b)] + mean_{b,i}[-log(1 - sigmoid(s_bi))]

    teacher_scores [B], student_scores [B, N] -> scalar. (Not a mean over the B*(1+N)
    items, which would give the teacher side only 1/(N+1) of the weight.)
    """
    teacher = F.binary_cross_entropy_with_logits(teacher_scores, torch.ones_like(teacher_scores))
    student = F.binary_cross_entropy_with_logits(student_scores, torch.zeros_like(student_scores))
    return teacher + student


def disc_accuracy(teacher_scores: Tensor, student_scores: Tensor) -> Tensor:
    """`d/acc`: fraction of (teacher, sample) pairs with D(y_t) > D(y_s). [B], [B, N] -> scalar."""
    return (teacher_scores.unsqueeze(1) > student_scores).float().mean()


def grpo_advantages(rewards: Tensor, std_norm: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages: `(r - mean_group(r)) / (std_group(r) + eps)`.

    rewards [B, N] -> [B, N]. The std is the unbiased sample std over the N samples of
    each prompt (as torch.std, verl and TRL compute it); `std_norm=False` keeps only the
    centering. Callers broadcast each scalar to all of the sample's response tokens.
    """
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not std_norm:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + eps)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(pi || ref) per token: `exp(ref - logp) - (ref - logp) - 1`.

    logp [*], ref_logp [*] -> [*], clamped to [-10, 10]. The log-ratio is clamped to
    [-20, 20] first so exp cannot overflow to inf (inf * 0 mask would give NaN).
    """
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-10.0, 10.0)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float = 3.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with dual clip, token-mean over unmasked tokens.

    logp [B, T], old_logp [B, T], advantages [B] (one scalar per sequence), mask [B, T]
    -> (scalar loss, stats). Per token: `max(-A*rho, -A*clip(rho, 1-low, 1+high))`, and
    for A < 0 also capped at `-A*dual_clip`. Stats (detached scalars): `clip_frac` (tokens
    where the clipped branch is active), `dual_clip_frac`, `ratio_mean`.
    """
    adv = advantages.unsqueeze(1).to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_ppo = torch.maximum(loss_unclipped, loss_clipped)
    loss_dual = torch.minimum(loss_ppo, -adv * dual_clip)
    per_token = torch.where(adv < 0, loss_dual, loss_ppo)
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((loss_clipped > loss_unclipped).float(), mask),
            "dual_clip_frac": masked_mean(((adv < 0) & (loss_ppo > loss_dual)).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def sft_loss(logp: Tensor, mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood of the masked tokens (SFT / SeqKD).

    logp [B, T] (log-prob of each target token), mask [B, T] -> scalar.
    """
    return -masked_mean(logp, mask)

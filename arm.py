"""ProGRPO's Advantage Re-weighting Mechanism (ARM), as pure tensor functions.

Shapes: P prompts, G completions per prompt, N = P * G rows, T tokens per row.

    A_i   = (R_i - mean(R)) / (std(R) + 1e-6)                          GRPO, within the group
    c(q)  = exp(mean_t log pi(q_t | q_<t))                             prompt confidence (1/perplexity)
    c(o|q)= exp(mean_{t in T_low} log pi(o_t | q, o_<t))               answer confidence, T_low = the
            ceil(rho * |o|) completion tokens with the lowest log-probability
    A~_i  = A_i                                   if no completion of the group is correct
          = A_i + alpha * (c(q) - c(o_i|q))        otherwise

Over-confident correct paths (c(o|q) > c(q)) get a smaller advantage, under-explored ones a larger
one; in all-correct groups, where GRPO's A_i is 0, the confidence term is the only signal.
Confidences are constants: callers pass tensors computed under no_grad.
"""
import math
from fractions import Fraction

import torch


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """GRPO advantages (P, G) from rewards (P, G). scale=False is Dr.GRPO's mean-only version."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale:  # sample std (divides by G - 1), torch's default and TRL's
        adv = adv / (rewards.std(dim=1, keepdim=True) + 1e-6)
    return adv


def answer_confidence(logp: torch.Tensor, mask: torch.Tensor, low_frac: float = 0.2) -> torch.Tensor:
    """c(o|q) (N,) from completion log-probs and mask (N, T): the exp of the mean log-prob over the
    ceil(low_frac * length) lowest-log-prob real tokens (at least 1). Padding never counts."""
    lengths = mask.sum(dim=1).long()  # (N,)
    # ceil(rho * len) in exact rational arithmetic: 0.2 * 15 is 3.0000000000000004 in floats.
    rho = Fraction(str(low_frac))
    k = ((lengths * rho.numerator + rho.denominator - 1) // rho.denominator).clamp(min=1)  # (N,)
    ranked = logp.float().masked_fill(mask == 0, float("inf")).sort(dim=1).values  # ascending, pads last
    take = torch.arange(logp.shape[1], device=logp.device)[None, :] < k[:, None]  # (N, T)
    mean_low = torch.where(take, ranked, 0.0).sum(dim=1) / k  # divides by |T_low| per row
    return mean_low.exp()


def prompt_confidence(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """c(q) (P,) from prompt-token log-probs and mask (P, T): 1 / perplexity over the tokens that
    have a predecessor (the caller's mask). A prompt with no such token gets c(q) = 1."""
    mask = mask.float()
    return ((logp.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).exp()


def shifted_groups(correct: torch.Tensor, groups: str = "any-correct") -> torch.Tensor:
    """(P,) bool from correct (P, G) bool: the groups ARM shifts.
    groups="any-correct": every group with at least one correct completion (the paper);
    groups="mixed": only groups with some but not all correct."""
    n_correct = correct.sum(dim=1)  # (P,)
    if groups == "any-correct":
        return n_correct > 0
    if groups == "mixed":
        return (n_correct > 0) & (n_correct < correct.shape[1])
    raise ValueError(f"groups must be 'any-correct' or 'mixed', got {groups!r}")


def reweight_rows(adv: torch.Tensor, shifted: torch.Tensor, answer_conf: torch.Tensor,
                  prompt_conf: torch.Tensor, alpha: float) -> torch.Tensor:
    """A~ for any n rows, each on its own: adv (n,), shifted (n,) bool (its group's), answer_conf (n,)
    and prompt_conf (n,) (its group's c(q)). The trainer scores rows a micro-batch at a time."""
    return adv + torch.where(shifted, (alpha * (prompt_conf - answer_conf)).to(adv.dtype), 0.0)


def reweight(adv: torch.Tensor, correct: torch.Tensor, answer_conf: torch.Tensor,
             prompt_conf: torch.Tensor, alpha: float, groups: str = "any-correct") -> torch.Tensor:
    """A~ (P, G) for whole groups. correct (P, G) bool, answer_conf (P, G) or (N,), prompt_conf (P,)."""
    P, G = adv.shape
    return reweight_rows(adv.reshape(-1), shifted_groups(correct, groups).repeat_interleave(G),
                         answer_conf.reshape(-1), prompt_conf.repeat_interleave(G), alpha).view(P, G)


def shift_stats(adv: torch.Tensor, adv_t: torch.Tensor) -> dict:
    """How ARM moved advantages (P, G) -> (P, G), as numbers to log; d = A~ - A, |A| = mean |A| over the N
    completions (every rel_ metric divides by it; nan when all A are 0: no group with signal to compare with).
    shift       mean |d| over the N completions
    rel_shift   shift / |A|. Mostly the part of d that a whole group shares (c(q) - its mean c(o|q)), which
                moves every completion of the group alike and reorders nothing
    rel_spread  mean |d - its group's mean d| over the N completions / |A|: the part that differs within a
                group, the part that reorders completions; the "ARM barely acts" warning watches it
    sign_flips  share of the completions with A != 0 whose sign ARM changed (A~ of the other sign or 0)
    swaps       share of the within-group pairs with A_i < A_j that ARM reversed (A~_i > A~_j)
    tie_gap     mean |A~_i - A~_j| over the within-group pairs that GRPO ties (A_i = A_j: two correct
                completions of a group) in the groups ARM shifted, / |A|: how far apart ARM sets what GRPO
                treats alike, ARM's whole purpose with 0/1 rewards (nan when no such pair)."""
    d = adv_t - adv
    scale = adv.abs().mean()
    moved = adv != 0
    flips = (torch.sign(adv_t) != torch.sign(adv)) & moved
    lower = adv[:, :, None] < adv[:, None, :]  # (P, G, G): pairs (i, j) with A_i < A_j
    swapped = lower & (adv_t[:, :, None] > adv_t[:, None, :])
    pairs = torch.ones_like(lower).triu(1)  # each pair (i < j) once
    tied = (adv[:, :, None] == adv[:, None, :]) & pairs & (d != 0).any(1)[:, None, None]  # (P, G, G)
    gaps = (adv_t[:, :, None] - adv_t[:, None, :]).abs()[tied]
    return dict(shift=d.abs().mean().item(), rel_shift=(d.abs().mean() / scale).item(),
                rel_spread=((d - d.mean(1, keepdim=True)).abs().mean() / scale).item(),
                sign_flips=(flips.sum() / moved.sum().clamp(min=1)).item(),
                swaps=(swapped.sum() / lower.sum().clamp(min=1)).item(),
                tie_gap=(gaps.mean() / scale).item() if len(gaps) else math.nan)

"""ARM and GRPO advantages on hand-computed numbers."""
import math

import pytest
import torch

import arm


def test_group_advantages_sample_std():
    # mean 0.5, sample std sqrt((4 * 0.25) / 3) = 0.57735: A = +-0.5 / (0.57735 + 1e-6)
    A = arm.group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert torch.allclose(A[0], torch.tensor([a, -a, -a, a]))
    assert torch.equal(A[1], torch.zeros(4))  # all-correct: GRPO gives nothing
    assert torch.equal(arm.group_advantages(torch.tensor([[1.0, 0.0]]), scale=False), torch.tensor([[0.5, -0.5]]))


def test_answer_confidence_takes_lowest_ceil_fraction():
    logp = -torch.arange(1, 16, dtype=torch.float32)[None] / 10  # 15 tokens: -0.1 .. -1.5
    mask = torch.ones(1, 15)
    # 20% of 15 is exactly 3 tokens (float arithmetic says 3.0000000000000004 -> 4): -1.3, -1.4, -1.5
    assert math.isclose(arm.answer_confidence(logp, mask, 0.2).item(), math.exp(-1.4), rel_tol=1e-6)
    # 0.3 * 10 = 3 exactly as well (floats: 3.0000000000000004)
    assert math.isclose(arm.answer_confidence(logp[:, :10], mask[:, :10], 0.3).item(), math.exp(-0.9), rel_tol=1e-6)
    # 21% of 15 = 3.15 -> 4 tokens
    assert math.isclose(arm.answer_confidence(logp, mask, 0.21).item(), math.exp(-1.35), rel_tol=1e-6)


def test_answer_confidence_excludes_padding_and_takes_at_least_one():
    logp = torch.tensor([[-0.5, -2.0, -0.1, -9.0, -9.0],
                         [-0.7, -9.0, -9.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    c = arm.answer_confidence(logp, mask, 0.2)  # ceil(0.6) = 1 and ceil(0.2) = 1 token
    assert torch.allclose(c, torch.tensor([math.exp(-2.0), math.exp(-0.7)]))


def test_prompt_confidence_is_inverse_perplexity():
    logp = torch.tensor([[-1.0, -2.0, -3.0, -50.0], [-0.2, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.allclose(arm.prompt_confidence(logp, mask), torch.tensor([math.exp(-2.0), math.exp(-0.2)]))


# Three groups of G = 2: all wrong, mixed, all correct. c(q) = 0.5 everywhere, alpha = 2.
ADV = torch.tensor([[0.0, 0.0], [0.7, -0.7], [0.0, 0.0]])
CORRECT = torch.tensor([[False, False], [True, False], [True, True]])
C_O = torch.tensor([0.9, 0.1, 0.9, 0.2, 0.8, 0.3])  # (N,), rows grouped by prompt
C_Q = torch.tensor([0.5, 0.5, 0.5])


def test_reweight_any_correct():
    out = arm.reweight(ADV, CORRECT, C_O, C_Q, alpha=2.0)
    expected = torch.tensor([[0.0, 0.0],  # all wrong: untouched
                             [0.7 + 2 * (0.5 - 0.9), -0.7 + 2 * (0.5 - 0.2)],
                             [2 * (0.5 - 0.8), 2 * (0.5 - 0.3)]])  # all correct: exactly the confidence term
    assert torch.allclose(out, expected)


def test_reweight_mixed_skips_all_correct_groups():
    out = arm.reweight(ADV, CORRECT, C_O, C_Q, alpha=2.0, groups="mixed")
    assert torch.allclose(out[1], torch.tensor([0.7 - 0.8, -0.7 + 0.6]))
    assert torch.equal(out[[0, 2]], ADV[[0, 2]])


def test_alpha_zero_is_grpo():
    assert torch.equal(arm.reweight(ADV, CORRECT, C_O, C_Q, alpha=0.0), ADV)


def test_reweight_rejects_unknown_group_rule():
    with pytest.raises(ValueError, match="groups"):
        arm.reweight(ADV, CORRECT, C_O, C_Q, alpha=1.0, groups="all")


def test_shift_stats_by_hand():
    A = torch.tensor([[0.0, 0.0], [0.7, -0.7], [0.0, 0.0]])
    A_t = torch.tensor([[0.0, 0.0], [-0.1, -0.5], [0.2, -0.2]])
    s = arm.shift_stats(A, A_t)
    # |A~ - A| = 0, 0, 0.8, 0.2, 0.2, 0.2 -> 1.4 / 6; mean |A| = 1.4 / 6 too
    assert math.isclose(s["shift"], 1.4 / 6, rel_tol=1e-6) and math.isclose(s["rel_shift"], 1.0, rel_tol=1e-6)
    assert s["sign_flips"] == 0.5  # of the two A != 0, 0.7 became -0.1; all-correct zeros do not count
    assert s["swaps"] == 0.0  # the one ordered pair (-0.7 < 0.7) stays ordered: -0.5 < -0.1
    s = arm.shift_stats(torch.tensor([[1.0, -1.0, 0.5]]), torch.tensor([[0.2, -0.9, 0.6]]))
    assert math.isclose(s["swaps"], 1 / 3, rel_tol=1e-6)  # of 3 ordered pairs, (0.5 < 1.0) reversed
    assert math.isnan(arm.shift_stats(torch.zeros(2, 2), torch.zeros(2, 2))["rel_shift"])  # nothing to compare


def test_shift_stats_see_arm_reorder_what_grpo_ties():
    """Group [1, 1, 1, 0], c(o|q) 0.1 / 0.9 / 0.5 / 0.5, c(q) 0.5, alpha 0.5: ARM reorders the three correct
    completions (GRPO ties them at A = 0.5) without a swap or a sign flip."""
    A = arm.group_advantages(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))  # mean 0.75, sample std 0.5
    A_t = arm.reweight(A, A > 0, torch.tensor([0.1, 0.9, 0.5, 0.5]), torch.tensor([0.5]), alpha=0.5)
    assert torch.allclose(A_t, torch.tensor([[0.7, 0.3, 0.5, -1.5]]), atol=1e-5)  # d = 0.2, -0.2, 0, 0
    s = arm.shift_stats(A, A_t)
    assert s["swaps"] == 0.0 and s["sign_flips"] == 0.0  # what the old metrics saw: nothing
    # mean |A| = (3 * 0.5 + 1.5) / 4 = 0.75; mean d = 0, so spread = shift = 0.4 / 4 = 0.1
    assert math.isclose(s["rel_spread"], 0.1 / 0.75, rel_tol=1e-4) and math.isclose(s["rel_shift"], 0.1 / 0.75, rel_tol=1e-4)
    # tied pairs (0, 1), (0, 2), (1, 2): gaps 0.4, 0.2, 0.2 -> mean 0.8 / 3, over 0.75
    assert math.isclose(s["tie_gap"], (0.8 / 3) / 0.75, rel_tol=1e-4)


def test_rel_spread_is_not_fooled_by_a_group_wide_offset():
    """SmolLM2's scale on GSM8K: c(q) - c(o|q) ~ 0.027 for every completion, varying by +-0.002. rel_shift reads
    a few percent; rel_spread, the part that reorders, reads a fraction of a percent (the warning's metric)."""
    A = arm.group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    d = torch.tensor([[0.027, 0.025, 0.029, 0.027, 0.025, 0.029, 0.027, 0.027]])
    s = arm.shift_stats(A, A + d)
    assert s["rel_shift"] > 0.03 and s["rel_spread"] < 0.01
    assert math.isclose(s["rel_spread"], (4 * 0.002 / 8) / A.abs().mean().item(), rel_tol=1e-3)  # mean d 0.027
    assert math.isnan(s["tie_gap"]) is False  # the seven wrong ones tie under GRPO, and ARM moved the group
    assert math.isnan(arm.shift_stats(A, A)["tie_gap"])  # ARM moved nothing: no shifted group

"""Change one thing, touch one place: a per-group alpha and a partial-credit reward, each tried by replacing one
function, without copying the loop; and any reward in [0, 1] trains as GRPO says."""
import json

import pytest
import torch

import progrpo
import rewards
import tasks


def run(tmp_path, name, *flags):
    progrpo.main(["--steps", "2", "--sample-every", "0", "--out", str(tmp_path / name), *flags])
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_a_per_group_alpha_is_one_function(tmp_path, monkeypatch, keep_signal_handlers):
    """The variant: alpha scaled by a group's share of wrong answers (0 for an all-correct group)."""
    plain = run(tmp_path, "plain")
    seen = []
    monkeypatch.setattr(progrpo, "arm_alpha", lambda alpha, correct: seen.append(correct) or
                        alpha * (~correct).float().mean(1))
    scaled = run(tmp_path, "scaled")
    assert len(seen) == 2 and seen[0].shape == (8, 8)  # called once a step with the (P, G) correctness
    # Step 1 samples the same completions (same seed, same weights): the shift only shrinks, and stays > 0.
    assert 0 < scaled[0]["arm_shift"] < plain[0]["arm_shift"]
    assert scaled[0]["accuracy"] == plain[0]["accuracy"]


def test_a_partial_credit_reward_trains_as_grpo_says(tmp_path, monkeypatch, keep_signal_handlers):
    """A grader that never says "correct" but gives 0.5 for a right pair: every group is 'without a correct
    completion', yet its advantages are not 0, so its rows get a forward and a gradient (they used to be
    skipped, as all-wrong groups are, when "correct" meant a reward over 0.5 in one place and a status in another)."""
    def half(completions, targets):
        return [(0.5 * rewards.pair_reward(c, t), "partial" if rewards.pair_reward(c, t) else "wrong")
                for c, t in zip(completions, targets)]
    demo = tasks.demo_task
    monkeypatch.setattr(tasks, "demo_task", lambda: tasks.Task(**{**vars(demo()), "grade": half}))
    rows = run(tmp_path, "half", "--alpha", "0")
    assert all(r["accuracy"] == 0 and r["all_wrong"] == 1 for r in rows)  # nothing is "correct"
    assert any(r["reward"] > 0 for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows if r["reward"] > 0)  # the 0.5s move the policy
    assert all(r["arm_shift"] == 0 for r in rows)  # ARM shifts groups with a correct completion only


def test_live_rows_follow_the_advantages():
    A = torch.tensor([[0.0, 0.0], [0.7, -0.7], [0.0, 0.0]])
    has_correct = torch.tensor([False, True, True])  # group 2: all correct (A = 0), which ARM may shift
    assert progrpo.live_rows(A, has_correct, beta=0.0).tolist() == [2, 3, 4, 5]
    assert progrpo.live_rows(A, torch.tensor([False, False, False]), beta=0.0).tolist() == [2, 3]
    assert progrpo.live_rows(A, torch.zeros(3, dtype=torch.bool), beta=0.1).tolist() == list(range(6))

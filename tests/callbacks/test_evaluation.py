import numpy as np
import pytest

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.callbacks import evaluate_relaxation, fixed_starts


class ZeroPolicy:
    def predict(self, obs, deterministic=True):
        return np.zeros(obs["mask"].size * 3, np.float32), None


class OraclePolicy:
    """Moves every atom straight to the minimum of its structure (one step when within reach)."""

    def __init__(self, env):
        self.env = env

    def predict(self, obs, deterministic=True):
        target = self.env.dataset[0].positions
        shift = (target - self.env.atoms.positions) / self.env.max_displacement
        return np.clip(shift, -1, 1).ravel().astype(np.float32), None


def test_fixed_starts():
    assert fixed_starts(3, 2, seed=10) == [(10, None), (11, None)]
    assert fixed_starts(2, 2, seed=0, per_structure=True) == [(0, 0), (1, 0), (2, 1), (3, 1)]


def test_metrics_match_hand_computed_values_for_a_scripted_policy():
    env = CrystalRelaxEnv(reward="force", epsilon=0.01)
    starts = fixed_starts(1, 3, seed=5)
    metrics, episodes = evaluate_relaxation(ZeroPolicy(), env, starts, max_steps=4, gamma=0.9)
    expected_returns, expected_discounted = [], []
    for seed, _ in starts:
        _, info = env.reset(seed=seed)
        rewards = [env.step(np.zeros(6, np.float32))[1] for _ in range(4)]
        expected_returns.append(sum(rewards))
        expected_discounted.append(sum(0.9**t * r for t, r in enumerate(rewards)))
        assert rewards[0] == pytest.approx(-info["fmax"])  # a zero action leaves the forces as they are
    assert metrics.full_return == pytest.approx(np.mean(expected_returns))
    assert metrics.discounted_return == pytest.approx(np.mean(expected_discounted))
    assert metrics.relaxation_steps == 4 and metrics.success_rate == 0.0
    assert metrics.normalised_last_step == pytest.approx(0.04)
    assert metrics.force_calls == 5 and len(episodes) == 3


def test_oracle_relaxes_in_one_step():
    env = CrystalRelaxEnv(reward="step", epsilon=0.05, beta=0.3)
    metrics, episodes = evaluate_relaxation(OraclePolicy(env), env, fixed_starts(1, 4), max_steps=10, gamma=0.99)
    assert metrics.success_rate == 1.0 and metrics.relaxation_steps == 1.0 and metrics.median_steps == 1.0
    assert metrics.full_return == 0.0 and metrics.force_calls == 2.0
    assert all(e["final_fmax"] <= 0.05 for e in episodes)

import numpy as np
import pytest

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.exploration.expert import add_expert_transitions, displacement_to_action, expert_transitions


@pytest.fixture(scope="module")
def env():
    return CrystalRelaxEnv(epsilon=0.05, reward="step", max_steps=50)


def test_expert_episodes_converge_and_follow_the_env(env):
    transitions = expert_transitions(env, n_episodes=3, seed=0)
    ends = [i for i, t in enumerate(transitions) if t[4]]
    assert len(ends) == 3 and ends[-1] == len(transitions) - 1  # every episode reaches ε
    for _, _, action, reward, terminated, info in transitions:
        assert action.shape == (6,) and np.abs(action).max() <= 1.0
        assert reward == (0.0 if terminated else -1.0)
        assert terminated == (info["fmax"] <= 0.05)
    # consecutive transitions chain: next_obs of one is obs of the next within an episode
    np.testing.assert_array_equal(transitions[0][1]["positions"], transitions[1][0]["positions"])


def test_displacement_to_action_inverts_the_env_scale(env):
    env.reset(seed=1)
    before = env.atoms.positions
    shift = np.array([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]])
    env.step(displacement_to_action(env, shift))
    np.testing.assert_allclose(env.atoms.positions - before, shift, atol=1e-7)


def test_added_to_the_replay_buffer(env):
    model = CrystalTD3("MultiInputPolicy", env, learning_starts=0, batch_size=4, policy_kwargs={"net_arch": [8]})
    added = add_expert_transitions(model, env, n_episodes=2, seed=0)
    assert added > 0 and model.replay_buffer.pos == added
    assert model.replay_buffer.dones[:added, 0].sum() == 2
    model.learn(8)

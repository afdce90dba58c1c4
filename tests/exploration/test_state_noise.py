import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal.exploration import GreedyExploration, StateNoise, axis_angle_rotation


@settings(max_examples=25, deadline=None)
@given(level=st.floats(0.0, 3.0), seed=st.integers(0, 2**32 - 1))
def test_noise_is_one_rotation_and_one_scale_per_structure(level, seed):
    noise = StateNoise(level=level, seed=seed)
    rng = np.random.default_rng(seed)
    forces = rng.normal(size=(2, 5, 3)).astype(np.float32)
    obs = {"forces": forces, "mask": np.ones((2, 5), np.float32)}
    before = forces.copy()
    noisy = noise.perturb(obs, np.array([level, 0.0]))
    np.testing.assert_array_equal(obs["forces"], before)  # the clean observation is untouched
    np.testing.assert_array_equal(noisy["forces"][1], forces[1])  # λ = 0: no change
    # Solve noisy = forces @ M for the 3x3 map M of structure 0: it must be s·Rᵀ with R a rotation.
    m, *_ = np.linalg.lstsq(forces[0].astype(np.float64), noisy["forces"][0].astype(np.float64), rcond=None)
    scale = np.cbrt(np.linalg.det(m))
    rotation = (m / scale).T
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-4)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-4)
    assert 1 - level - 1e-4 <= scale <= 1 + level + 1e-4
    norms = np.linalg.norm(noisy["forces"][0], axis=1) / np.linalg.norm(forces[0], axis=1)
    np.testing.assert_allclose(norms, abs(scale), rtol=1e-4)


def test_rotation_angle_grows_with_level():
    noise = StateNoise(level=0.2, seed=0, angle_scale=0.5)
    for level in (0.1, 0.4):
        for _ in range(50):
            rotation, scale = noise.sample(level)
            angle = np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))
            assert angle <= 0.5 * level + 1e-9 and abs(scale - 1) <= level


def test_axis_angle_rotation_rotates_about_its_axis():
    rotation = axis_angle_rotation(np.array([0.0, 0.0, 2.0]), np.pi / 2)
    np.testing.assert_allclose(rotation @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rotation @ [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], atol=1e-12)


def test_linear_schedule_and_config():
    noise = StateNoise.from_config({"level": [0.3, 0.1], "horizon": 100})
    np.testing.assert_allclose(noise.level_at(np.array([0, 50, 100, 200])), [0.3, 0.2, 0.1, 0.1])
    assert StateNoise.from_config(0.2).level_at(7) == pytest.approx(0.2)
    assert StateNoise.from_config(None) is None
    with pytest.raises(ValueError, match="level"):
        StateNoise(level=-0.1)
    with pytest.raises(TypeError):
        StateNoise.from_config("loud")  # type: ignore[arg-type]


def test_greedy_triggers_exactly_after_n_stalled_steps_and_stops_on_a_move():
    greedy = GreedyExploration(n_steps=3, max_shift=0.01, min_fmax=0.1, level=20.0)
    stalled = {"fmax": 0.5, "max_shift": 0.001}
    no = np.zeros(2, bool)
    other = {"fmax": 0.5, "max_shift": 0.2}  # env 1 keeps moving
    for _ in range(3):
        assert not greedy.active(2).any()
        greedy.update([stalled, other], no)
    assert greedy.active(2).tolist() == [True, False] and greedy.triggers == 1
    greedy.update([stalled, other], no)
    assert greedy.active(2)[0] and greedy.triggers == 1  # stays on, counted once
    greedy.update([{"fmax": 0.5, "max_shift": 0.05}, other], no)
    assert not greedy.active(2)[0]  # moved again
    for _ in range(5):  # low force: not a stall
        greedy.update([{"fmax": 0.05, "max_shift": 0.0}, other], no)
    assert not greedy.active(2).any()
    for _ in range(2):
        greedy.update([stalled, other], no)
    greedy.update([stalled, other], np.array([True, False]))  # episode ended: counter reset
    greedy.update([stalled, other], no)
    assert not greedy.active(2).any() and greedy.triggers == 1

"""Stand-in crystal env with the exact observation/action contract of ``sb3_crystal.envs.CrystalRelaxEnv``."""

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_crystal.policies import register_policy_aliases

B2_CELL = np.eye(3) * 2.85
B2_FRAC = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
TRICLINIC_CELL = np.array([[3.1, 0.0, 0.0], [1.3, 2.9, 0.0], [-0.8, 0.9, 3.4]])


class ToyCrystalEnv(gym.Env):
    """Atoms on springs to their ideal sites (forces = -k * displacement), padded to ``n_max`` slots.

    :param n_max: padded slots
    :param structure: ``"b2"`` (AlFe, 2 atoms) or ``"triclinic"`` (3 atoms)
    :param max_steps: truncation
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, n_max: int = 4, structure: str = "b2", max_steps: int = 10) -> None:
        if structure == "b2":
            self.cell, frac, self.numbers = B2_CELL, B2_FRAC, np.array([13, 26])
        else:
            self.cell, frac, self.numbers = (
                TRICLINIC_CELL,
                np.array([[0, 0, 0], [0.3, 0.6, 0.2], [0.7, 0.1, 0.5]]),
                np.array([13, 26, 26]),
            )
        self.ideal = frac @ self.cell
        self.n_atoms, self.n_max, self.max_steps = len(self.numbers), n_max, max_steps
        box = lambda shape: spaces.Box(-np.inf, np.inf, shape, np.float32)  # noqa: E731
        self.observation_space = spaces.Dict(
            {
                "positions": box((n_max, 3)),
                "cell": box((3, 3)),
                "forces": box((n_max, 3)),
                "species": spaces.Box(0, 118, (n_max,), np.float32),
                "mask": spaces.Box(0, 1, (n_max,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1, 1, (3 * n_max,), np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        pad = lambda x: np.concatenate([x, np.zeros((self.n_max - self.n_atoms, *x.shape[1:]))]).astype(np.float32)  # noqa: E731
        return {
            "positions": pad(self.positions),
            "cell": self.cell.astype(np.float32),
            "forces": pad(-2.0 * (self.positions - self.ideal)),
            "species": pad(self.numbers.astype(float)),
            "mask": pad(np.ones(self.n_atoms)),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.positions = self.ideal + 0.2 * self.np_random.standard_normal(self.ideal.shape)
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        self.positions = self.positions + 0.1 * np.asarray(action).reshape(self.n_max, 3)[: self.n_atoms]
        self.steps += 1
        fmax = float(np.linalg.norm(-2.0 * (self.positions - self.ideal), axis=1).max())
        return self._obs(), -fmax, fmax < 0.05, self.steps >= self.max_steps, {"fmax": fmax}


def random_rotation(generator: th.Generator) -> th.Tensor:
    """Random proper rotation (float32)."""
    q, r = th.linalg.qr(th.randn(3, 3, generator=generator, dtype=th.float64))
    q = q * th.sign(th.diagonal(r))
    if th.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def random_obs_batch(n_max: int = 5, generator: th.Generator | None = None) -> dict[str, th.Tensor]:
    """Two structures (B2 AlFe with 2 atoms, triclinic with 3), perturbed, with random forces, padded to ``n_max``."""
    g = generator if generator is not None else th.Generator().manual_seed(0)
    envs = [ToyCrystalEnv(n_max, "b2"), ToyCrystalEnv(n_max, "triclinic")]
    obs = [env.reset(seed=k)[0] for k, env in enumerate(envs)]
    batch = {key: th.tensor(np.stack([o[key] for o in obs])) for key in obs[0]}
    mask = batch["mask"].unsqueeze(-1)
    batch["forces"] = th.randn(batch["forces"].shape, generator=g) * mask
    batch["positions"] = batch["positions"] + 0.1 * th.randn(batch["positions"].shape, generator=g) * mask
    return batch


def learn_save_load(
    algo: type[OffPolicyAlgorithm], policy: str | type, policy_kwargs: dict, path
) -> tuple[OffPolicyAlgorithm, OffPolicyAlgorithm, np.ndarray]:
    """Train a tiny model on a B2 toy env (``n_max=4``), save and reload it, check the reloaded one acts the same.

    :return: the model, the reloaded model, the model's deterministic action on ``env.reset(seed=3)``
    """
    register_policy_aliases()
    env = ToyCrystalEnv(n_max=4)
    model = algo(policy, env, learning_starts=32, batch_size=16, policy_kwargs=dict(policy_kwargs), seed=0)
    model.learn(64)
    obs, _ = env.reset(seed=3)
    action, _ = model.predict(obs, deterministic=True)
    model.save(path)
    loaded = algo.load(path, env=env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)
    return model, loaded, action


@pytest.fixture
def b2_env() -> ToyCrystalEnv:
    return ToyCrystalEnv(n_max=4, structure="b2")


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """Tiny graphs: intra-op threading only adds synchronisation (very costly on a loaded 2-core machine)."""
    n_threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n_threads)

"""RayVecEnv on a local two-CPU Ray cluster: step-by-step agreement with DummyVecEnv, the VecEnv API, SB3 training
on it, rl-zoo's ``--vec-env ray``, and a killed actor's error.

Skipped without Ray (``pip install 'sb3-crystal[ray]'``). Each actor imports the package afresh, so the module
builds as few actors as it can.
"""

from __future__ import annotations

import functools
import os
import signal
import time

import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan

from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.vec_env import EnvWorkerError, vec_env_class

ray = pytest.importorskip("ray")

from sb3_crystal.vec_env.ray import RayVecEnv  # noqa: E402 - after the skip

# max_steps=3: episodes end within the test, so auto-reset and terminal_observation are compared too.
MAKE_B2 = functools.partial(CrystalRelaxEnv, structures="AlFe-B2", max_steps=3, epsilon=0.05)


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="class")
def ray_env(ray_cluster):
    # Shared by the tests of one class (actors are slow to start); it holds both CPUs of the cluster until the
    # class ends.
    env = RayVecEnv([MAKE_B2, MAKE_B2])
    yield env
    env.close()


def _actions(n_envs: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n_envs, 6)).astype(np.float32)


def _assert_same_observations(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in b:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


class TestOnTwoActors:
    """The tests that share one two-actor RayVecEnv."""

    def test_steps_match_dummy_vec_env_on_the_same_seeds(self, ray_env) -> None:
        dummy = DummyVecEnv([MAKE_B2, MAKE_B2])
        try:
            for seed in (7, 8):  # re-seeding through reset() starts both again identically
                ray_env.seed(seed)
                dummy.seed(seed)
                _assert_same_observations(ray_env.reset(), dummy.reset())
                assert ray_env.reset_infos == dummy.reset_infos
                n_done = 0
                for step in range(7):
                    actions = _actions(2, 100 * seed + step)
                    obs_r, rew_r, done_r, info_r = ray_env.step(actions)
                    obs_d, rew_d, done_d, info_d = dummy.step(actions)
                    _assert_same_observations(obs_r, obs_d)
                    assert rew_r.dtype == rew_d.dtype and done_r.dtype == done_d.dtype
                    np.testing.assert_array_equal(rew_r, rew_d)
                    np.testing.assert_array_equal(done_r, done_d)
                    for info_ray, info_dummy in zip(info_r, info_d, strict=True):
                        terminal_ray, terminal_dummy = (
                            info_ray.pop("terminal_observation", None),
                            info_dummy.pop("terminal_observation", None),
                        )
                        assert info_ray == info_dummy
                        assert (terminal_ray is None) == (terminal_dummy is None)
                        if terminal_dummy is not None:
                            _assert_same_observations(terminal_ray, terminal_dummy)
                            assert all(array.flags.writeable for array in terminal_ray.values())
                    n_done += int(done_d.sum())
                    assert ray_env.reset_infos == dummy.reset_infos
                assert n_done >= 2  # episodes ended (truncation at max_steps) and were reset in the actors
            # options reach the actors' reset
            ray_env.set_options({"structure_index": 0})
            dummy.set_options({"structure_index": 0})
            ray_env.seed(1)
            dummy.seed(1)
            _assert_same_observations(ray_env.reset(), dummy.reset())
        finally:
            dummy.close()

    def test_attributes_and_methods_behave_as_in_dummy_vec_env(self, ray_env) -> None:
        dummy = DummyVecEnv([MAKE_B2, MAKE_B2])
        try:
            for env in (ray_env, dummy):
                env.set_attr("beta", 0.25, indices=1)
                env.env_method("set_epsilon", 0.04, indices=[0])
            assert ray_env.get_attr("beta") == dummy.get_attr("beta") == [0.5, 0.25]
            assert ray_env.env_method("get_settings") == dummy.env_method("get_settings")
            assert ray_env.get_attr("epsilon", indices=0) == [0.04]
            assert ray_env.has_attr("set_beta") and not ray_env.has_attr("no_such_attribute")
            assert ray_env.env_is_wrapped(Monitor) == dummy.env_is_wrapped(Monitor) == [False, False]
            assert ray_env.render_mode is None and ray_env.num_envs == 2
            with pytest.raises(AttributeError, match="no_such_attribute"):
                ray_env.get_attr("no_such_attribute")
            with pytest.raises(ValueError, match="beta"):  # the environment's own error, with its type
                ray_env.env_method("set_beta", -1.0)
        finally:
            for env in (ray_env, dummy):
                env.set_attr("beta", 0.5)
                env.env_method("set_epsilon", 0.05)
            dummy.close()

    def test_sb3_trains_on_it(self, ray_env) -> None:
        from stable_baselines3 import TD3

        env = VecCheckNan(ray_env, raise_exception=True)  # SB3's check of every step's values
        model = TD3("MultiInputPolicy", env, learning_starts=4, batch_size=4, policy_kwargs={"net_arch": [8]}, seed=0)
        model.learn(12)
        assert model.num_timesteps == 12 and model.replay_buffer.size() == 6  # two envs: 6 vector steps

    def test_exception_in_reset_names_the_env(self, ray_env) -> None:
        ray_env.set_options([{}, {"structure_index": 5}])
        with pytest.raises(EnvWorkerError, match=r"env 1 .* raised IndexError: structure_index 5 out of range.*'reset'"):
            ray_env.reset()
        ray_env.set_options([{}, {}])  # options are cleared only by a reset that succeeds
        ray_env.reset()  # the actor survived its environment's exception

    def test_killed_actor_names_its_env_and_close_returns(self, ray_env) -> None:
        # The last test of the class: it kills one of the shared actors.
        env = ray_env
        env.seed(0)
        env.reset()
        env.step(_actions(2, 0))
        pid = env.pids[1]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EnvWorkerError) as caught:
            env.step(_actions(2, 1))
        message = str(caught.value).splitlines()[0]
        assert f"RayVecEnv env 1 (actor pid {pid} on " in message and "died" in message and "'step'" in message
        assert "structure_index=0" in message and "episode_step=1" in message
        assert caught.value.env_index == 1
        with pytest.raises(EnvWorkerError, match="env 1"):  # every later call says so too
            env.get_attr("epsilon")
        start = time.monotonic()
        env.close()
        assert time.monotonic() - start < 5.0
        env.close()  # idempotent


def test_bad_arguments_fail_before_any_actor_starts() -> None:
    with pytest.raises(ValueError, match="env_fns"):
        RayVecEnv([])
    with pytest.raises(ValueError, match="timeout"):
        RayVecEnv([MAKE_B2], timeout=-1)


def test_actor_that_cannot_be_placed_is_reported(ray_cluster) -> None:
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match=r"env 0 \(actor starting\) sent no reply within 1.5 s during 'start'"):
        RayVecEnv([MAKE_B2], num_cpus_per_env=64, start_timeout=1.5)  # the cluster has 2 CPUs
    assert time.monotonic() - start < 5.0


def test_rl_zoo_trains_with_vec_env_ray(ray_cluster, tmp_path, monkeypatch) -> None:
    pytest.importorskip("rl_zoo3")
    import yaml

    from sb3_crystal.algorithms import CrystalTD3
    from sb3_crystal.training import train

    assert vec_env_class("ray") is RayVecEnv
    steps: list[int] = []
    original = RayVecEnv.step_wait

    def counting_step_wait(self):
        steps.append(self.num_envs)
        return original(self)

    monkeypatch.setattr(RayVecEnv, "step_wait", counting_step_wait)
    config = tmp_path / "tiny.yml"
    hyperparams = {"policy": "MultiInputPolicy", "n_timesteps": 16, "learning_starts": 4, "batch_size": 4}
    hyperparams |= {"policy_kwargs": "dict(net_arch=[8])", "env_kwargs": {"max_steps": 3}}
    config.write_text(yaml.safe_dump({"CrystalRelax-v0": hyperparams}))
    common = ["--algo", "td3", "--env", "CrystalRelax-v0", "--conf-file", str(config), "-f", str(tmp_path / "logs")]
    # one environment: each actor imports the package afresh, and two-actor behaviour is tested above
    train([*common, "--vec-env", "ray", "--eval-freq", "-1", "--seed", "0"])
    model = CrystalTD3.load(tmp_path / "logs" / "td3" / "CrystalRelax-v0_1" / "CrystalRelax-v0.zip")
    assert model.num_timesteps == 16
    assert len(steps) == 16  # every step of the training environment went through RayVecEnv

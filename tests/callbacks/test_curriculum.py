import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_crystal import ENV_ID
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.callbacks import RelaxationEvalCallback, RewardCurriculum

STAGES = [
    {"reward": "hybrid", "reward_weights": [1.0, 0.0, 0.5], "epsilon": 0.3, "target_steps": 1000, "min_success": 0.0},
    {"reward": "step", "epsilon": 0.1, "target_steps": 1000, "min_success": 0.0},
    {"reward": "step", "epsilon": 0.05},
]
LEARNING_STARTS = 8


def tiny() -> dict:
    """Small settings (fresh dicts: SB3 writes into policy_kwargs)."""
    return {"policy_kwargs": {"net_arch": [8]}, "learning_starts": LEARNING_STARTS, "batch_size": 8, "seed": 0}


def test_curriculum_switches_every_subprocess_env_and_resumes_at_saved_stage(tmp_path):
    vec = make_vec_env(f"sb3_crystal:{ENV_ID}", n_envs=2, vec_env_cls=SubprocVecEnv, env_kwargs={"max_steps": 5})
    try:
        model = CrystalTD3("MultiInputPolicy", vec, **tiny())
        curriculum = RewardCurriculum(STAGES)
        evaluation = RelaxationEvalCallback(eval_freq=5, n_episodes=1, max_steps=2, callback_after_eval=curriculum)
        model.learn(20, callback=evaluation)  # 10 vectorised steps, two evaluations: stage 0 → 1 → 2
        assert model.curriculum_stage == 2
        settings = vec.env_method("get_settings")
        assert all(s["reward"] == "step" and s["epsilon"] == 0.05 for s in settings)
        assert evaluation.eval_envs["eval"].epsilon == 0.1  # evaluated at the stage in force before the switch
        model.save(tmp_path / "model.zip")
        vec.env_method("set_epsilon", 0.3)
        vec.env_method("set_reward", "force")

        resumed = CrystalTD3.load(tmp_path / "model.zip", env=vec)
        assert resumed.curriculum_stage == 2
        resumed.learn(
            2,
            callback=RelaxationEvalCallback(eval_freq=100, callback_after_eval=RewardCurriculum(STAGES)),
            reset_num_timesteps=False,
        )
        assert all(s["reward"] == "step" and s["epsilon"] == 0.05 for s in vec.env_method("get_settings"))
    finally:
        vec.close()


def test_bad_stages_are_refused():
    with pytest.raises(ValueError, match="stage 0 needs 'reward' and 'epsilon'"):
        RewardCurriculum([{"reward": "step"}])
    with pytest.raises(ValueError, match="reward must be one of"):
        RewardCurriculum([{"reward": "energy", "epsilon": 0.1}])
    with pytest.raises(ValueError, match="at least one stage"):
        RewardCurriculum([])

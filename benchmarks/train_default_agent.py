"""Train the Al–Fe agent shipped with the package (``sb3_crystal/relax/default_agent``).

    python benchmarks/train_default_agent.py --steps 40000 --seed 0

TD3 + CrystalTFNPolicy ("small" preset) on varied Al–Fe cells: the built-in prototypes (B2 and simple hexagonal
AlFe, fcc/hcp Al, bcc/fcc Fe, I4/mmm Al) and 24 random symmetric Al–Fe cells of 2–8 atoms (pyxtal, seed 0; saddle
points of the potential pushed into true minima), β = 0.5 Å, force-adaptive action scale, hybrid reward, ε 0.05
eV/Å, Gaussian action noise σ 0.1 (it learned faster than state noise on B2, see docs/results.md). Every 2000
steps the agent relaxes 20 fixed B2 starts and 2 starts of every training cell; the model with the best B2
evaluation (success, then fewest steps) is written as weights + plain-data settings (no pickled code) with
:func:`sb3_crystal.relax.save_agent`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch as th
from ase.data import chemical_symbols
from stable_baselines3.common.noise import NormalActionNoise

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.callbacks import RelaxationEvalCallback
from sb3_crystal.relax.agent_io import DEFAULT_AGENT_DIR, save_agent

PROTOTYPES = ["AlFe-B2", "AlFe-hex", "Al-fcc", "Al-hcp", "Fe-bcc", "Fe-fcc", "Al-I4mmm"]
RANDOM = "random:count=24,atoms=2-8,seed=0"
ENV = {
    "structures": [*PROTOTYPES, RANDOM],
    "n_max": 8,
    "beta": 0.5,
    "epsilon": 0.05,
    "reward": "hybrid",
    "reward_weights": (1.0, 0.0, 0.5),
    "action_scale": "force",
    "max_steps": 100,
    "saddles": "escape",
}
TD3_SETTINGS = {
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "batch_size": 100,
    "buffer_size": 200_000,
    "learning_starts": 1000,
    "tau": 0.005,
    "policy_delay": 2,
    "target_policy_noise": 0.05,
    "target_noise_clip": 0.1,
}


def export_agent(env: CrystalRelaxEnv, work: Path, meta: dict, install: bool, fallback: CrystalTD3 | None = None) -> Path:
    """Write the best B2 model of the run (or ``fallback``) as an agent folder; optionally install it."""
    best = work / "best" / "best_model_eps0.05.zip"
    chosen = CrystalTD3.load(best) if best.is_file() else fallback
    if chosen is None:
        raise SystemExit(f"no model to export in {work}")
    chosen.crystal_env_kwargs = env.get_init_kwargs()
    chosen.crystal_species = sorted({chemical_symbols[z] for z in env.dataset.atomic_numbers})
    folder = save_agent(chosen, work / "agent")
    print(f"agent written to {folder} (from {best if best.is_file() else 'the final model'})")
    if install:
        if DEFAULT_AGENT_DIR.exists():
            shutil.rmtree(DEFAULT_AGENT_DIR)
        shutil.copytree(folder, DEFAULT_AGENT_DIR)
        (DEFAULT_AGENT_DIR / "training.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "history"}))
        print(f"installed in {DEFAULT_AGENT_DIR}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("results/default_agent"), help="run folder (models, logs)")
    parser.add_argument("--install", action="store_true", help=f"write the best agent into {DEFAULT_AGENT_DIR}")
    parser.add_argument("--export-only", action="store_true", help="skip training: export the run in --work")
    args = parser.parse_args()
    th.set_num_threads(1)
    env = CrystalRelaxEnv(**ENV)
    print(env.dataset.summary())
    if args.export_only:
        meta = json.loads((args.work / "training.json").read_text())
        export_agent(env, args.work, meta, args.install)
        return
    n_actions = env.action_space.shape[0]
    model = CrystalTD3(
        "CrystalTFNPolicy",
        env,
        seed=args.seed,
        action_noise=NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions)),
        tensorboard_log=str(args.work / "tb"),
        **TD3_SETTINGS,
    )
    evaluation = RelaxationEvalCallback(
        eval_freq=2000,
        n_episodes=20,
        max_steps=100,
        seed=10_000,
        env_kwargs={**ENV, "structures": "AlFe-B2"},
        validation={"train": {"structures": [*PROTOTYPES, RANDOM]}},
        best_model_save_path=args.work / "best",
        verbose=1,
    )
    start = time.time()
    model.learn(args.steps, callback=evaluation, progress_bar=False)
    model.save(args.work / "final.zip")
    meta = {"command": "python benchmarks/train_default_agent.py", "steps": args.steps, "seed": args.seed}
    meta.update(wall_s=round(time.time() - start), history=evaluation.history)
    (args.work / "training.json").write_text(json.dumps(meta, indent=1))
    export_agent(env, args.work, meta, args.install, fallback=model)


if __name__ == "__main__":
    main()

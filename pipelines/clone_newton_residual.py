"""Warm start for a residual agent: clone the exact-Hessian Newton step on generated structures, judge on validation.

    python pipelines/clone_newton_residual.py --episodes 300 --epochs 40 --seed 0 --out runs/newton_clone_s0

A teacher that needs no known minimum: at every state of fresh generated structures (random symmetric Al–Fe cells of
4–8 atoms rattled by 0.2 Å, the training generator of ``train_history_agent.py``) the Newton step with the exact EAM
Hessian (matscipy's analytic one; |eigenvalues|, the three translations left out, no atom moving more than 0.3 Å) is
the target move. Episodes walk along the teacher's own steps through the environment, so the observation's history
and L-BFGS proposal are those a good agent would see; the actor of a residual, history-aware TD3 agent is regressed
onto the teacher's move minus the proposal (:func:`~sb3_crystal.exploration.demonstrations.pretrain_actor`). The
result goes through :class:`~sb3_crystal.relax.RLOptimizer` (trust region on) on the validation starts of
``--family`` next to the zero-action proposal; the agent folder is written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch as th
from train_history_agent import ENV_KWARGS, GENERATORS, relax_starts, summary, zero_action_agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the Newton baseline's step
from unseen_families import newton_step

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import matscipy_eam
from sb3_crystal.exploration.demonstrations import MAX_TARGET_NORM, ReferenceMoves, pretrain_actor
from sb3_crystal.relax import save_agent
from sb3_crystal.structures.families import check_training_seed, test_family

#: Residual corrections up to this per component, Å (the Newton step and the proposal differ by up to ~0.3 Å).
MAX_DISPLACEMENT = 0.3


def teacher_samples(env: CrystalRelaxEnv, episodes: int, seed: int) -> ReferenceMoves:
    """Observations along the teacher's relaxations and the residual actions that reproduce its steps."""
    hessian_calc = matscipy_eam()
    observations, actions = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        for _ in range(env.max_steps):
            atoms = env.atoms
            target = newton_step(hessian_calc, atoms, env.forces)
            action = env.moves.action_for(target, env.forces, env.n_max, env.proposal).reshape(env.n_max, 3)
            norms = np.linalg.norm(action, axis=1, keepdims=True)
            action = action * np.minimum(1.0, MAX_TARGET_NORM / np.maximum(norms, 1e-12))
            observations.append(obs)
            actions.append(action.ravel())
            obs, _, terminated, truncated, _ = env.step(action.ravel())
            if terminated or truncated:
                break
    stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    n = len(actions)
    return ReferenceMoves(stacked, np.stack(actions).astype(np.float32), np.zeros(n), np.full(n, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", default="random_4-8_beta0.3")
    parser.add_argument("--eval-cells", type=int, default=8)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path("runs/newton_clone"))
    args = parser.parse_args()
    check_training_seed(args.seed, "--seed")
    warnings.simplefilter("ignore")
    th.manual_seed(args.seed)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    family = test_family(args.family, "validation", n_cells=args.eval_cells)
    kwargs = {**ENV_KWARGS, "max_displacement": MAX_DISPLACEMENT, "max_steps": 30}
    env = CrystalRelaxEnv(**kwargs, generator=GENERATORS["random"], n_max=max(16, family.max_atoms))

    t0 = time.perf_counter()
    samples = teacher_samples(env, args.episodes, args.seed)
    collect_s = time.perf_counter() - t0
    print(f"{len(samples)} teacher samples from {args.episodes} episodes in {collect_s:.0f} s", flush=True)
    model = CrystalTD3("CrystalTFNPolicy", env, policy_kwargs={"mul": 16, "n_layers": 2}, seed=args.seed)
    t0 = time.perf_counter()
    losses = pretrain_actor(model, samples, epochs=args.epochs, batch_size=128, learning_rate=2e-3, seed=args.seed, verbose=0)
    fit_s = time.perf_counter() - t0
    print(f"regression loss {losses[0]:.4f} -> {losses[-1]:.4f} in {fit_s:.0f} s", flush=True)
    save_agent(model, args.out / "agent")

    zero = zero_action_agent(env.n_max, kwargs)
    results = {}
    for name, agent in (("zero action (L-BFGS proposal)", zero), ("Newton clone", model)):
        rows = relax_starts(agent, family.starts, args.fmax, 300)
        results[name] = {**summary(rows), "calls": [r["force_calls"] for r in rows], "stops": [r["stop"] for r in rows]}
        print(name, json.dumps({k: v for k, v in results[name].items() if k not in ("calls", "stops")}), flush=True)
    record = {
        "command": f"python pipelines/clone_newton_residual.py --episodes {args.episodes} --epochs {args.epochs} "
        f"--seed {args.seed}",
        "samples": len(samples),
        "collect_seconds": collect_s,
        "fit_seconds": fit_s,
        "losses": losses,
        "family": args.family,
        "eval_starts": len(family.starts),
        "results": results,
    }
    (args.out / "result.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

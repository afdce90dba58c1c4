"""Warm start for the curvature-residual agent: clone the move to B2's known minimum and the zero action elsewhere.

    python pipelines/clone_curvature_residual.py --b2-episodes 600 --pool-episodes 200 --seed 0 --out runs/clone_cr_s0

The recipe of ``train_curvature_agent.py`` (learned-curvature proposal, residual actions, trust region) starts at
its zero action, :class:`~sb3_crystal.relax.LearnedCurvature`, which on distorted B2 AlFe needs more force calls
than issue 13 allows (≤ 0.5× the best classical optimizer), and which RL did not improve. Issue 13 keeps cloning
onto the move to a known minimum as an optional warm start; this script is that warm start, limited to where a
minimum is known:

- **B2 AlFe** (2 atoms; β drawn uniformly in [``--b2-beta-min``, ``--b2-beta``] Å per episode): the target is the
  move back to the relaxed B2 cell (:func:`~sb3_crystal.exploration.demonstrations.reference_move`), written as the
  residual action that turns the proposal into that move, at every state of an episode that walks the zero action's
  steps (so states near the minimum, which a clone meets after an imperfect first move, are labelled too).
- **generated cells** (the RL recipe's pool of random Al–Fe cells, minimum unknown): the target is the zero action,
  so the clone keeps the learned curvature there; episodes walk the zero action's steps.

Episodes run to ``--collect-epsilon`` (0.005 eV/Å), below the thresholds the agent is used at, so the clone has seen
the states near a minimum where its correction must vanish.

The actor is regressed onto both (:func:`~sb3_crystal.exploration.demonstrations.pretrain_actor`) and judged, through
:class:`~sb3_crystal.relax.RLOptimizer` with its default safeguards, next to the zero action on the validation
starts of random Al–Fe cells and on distorted B2 starts (seed ``--b2-eval-seed``, not a training seed). The agent
folder can seed RL: ``train_curvature_agent.py --init-agent <out>/agent``. ``--install <run>`` copies a finished
run's agent into the package as the shipped ``curvature`` agent (``load_shipped_agent("curvature")``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch as th

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.exploration.demonstrations import MAX_TARGET_NORM, ReferenceMoves, pretrain_actor, reference_move
from sb3_crystal.relax import save_agent
from sb3_crystal.structures.families import FAMILIES, SPLITS, check_training_seed, test_family, training_matches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_curvature_agent import ENV_KWARGS, b2_starts, pool_generator, save_samples, training_pool
from train_history_agent import relax_starts, summary, zero_action_agent


def _clipped(action: np.ndarray, n_slots: int) -> np.ndarray:
    """``action`` with every atom's vector no longer than :data:`MAX_TARGET_NORM` (the squashed actor's reach)."""
    per_atom = action.reshape(n_slots, 3)
    norms = np.linalg.norm(per_atom, axis=1, keepdims=True)
    return (per_atom * np.minimum(1.0, MAX_TARGET_NORM / np.maximum(norms, 1e-12))).ravel()


#: Episode ``e`` of seed ``s`` resets the environment with seed ``EPISODE_SEEDS * s + e``: seeds draw disjoint episodes.
EPISODE_SEEDS = 100_000


def collect(
    env: CrystalRelaxEnv, b2_episodes: int, pool_episodes: int, beta: tuple[float, float], seed: int
) -> ReferenceMoves:
    """Observations and target actions along the teacher's steps (see the module docstring)."""
    rng = np.random.default_rng(seed)
    first = EPISODE_SEEDS * seed
    observations, actions, betas, kinds = [], [], [], []
    zero = np.zeros(env.action_space.shape, np.float32)
    for episode in range(b2_episodes + pool_episodes):
        is_b2 = episode < b2_episodes
        if is_b2:
            env.set_beta(float(rng.uniform(*beta)))
            obs, _ = env.reset(seed=first + episode, options={"structure_index": 0})
        else:
            obs, _ = env.reset(seed=first + episode)
        for _ in range(env.max_steps):
            if is_b2:
                move = reference_move(env.atoms, env.dataset[0])
                action = _clipped(env.moves.action_for(move, env.forces, env.n_max, env.proposal), env.n_max)
            else:
                action = zero
            observations.append(obs)
            actions.append(action.astype(np.float32))
            betas.append(env.beta if is_b2 else 0.0)
            kinds.append(0 if is_b2 else -1)
            # B2 episodes walk the zero action's steps, labelled with the teacher's move at every state they reach
            # (the near-minimum states a clone meets after an imperfect first move are covered too)
            obs, _, terminated, truncated, _ = env.step(zero)
            if terminated or truncated:
                break
    stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return ReferenceMoves(stacked, np.stack(actions), np.array(betas), np.array(kinds))


#: Where ``--install`` puts the chosen run's agent: the shipped ``curvature`` agent.
INSTALL_DIR = Path(__file__).resolve().parents[1] / "sb3_crystal" / "relax" / "curvature_agent"


def install(run: Path, chosen_by: str) -> None:
    """Copy the agent of a finished run (``run``/agent, ``run``/result.json) into :data:`INSTALL_DIR`, with a
    ``training.json`` of its command, its validation summary and ``chosen_by``; the model card is kept."""
    record = json.loads((run / "result.json").read_text())
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("settings.json", "weights.pt"):
        shutil.copyfile(run / "agent" / name, INSTALL_DIR / name)
    results = record["results"]
    summary_only = {key: {k: v for k, v in entry.items() if k not in ("calls", "stops")} for key, entry in results.items()}
    training = {
        "command": record["command"],
        "install": f"python pipelines/clone_curvature_residual.py --install runs/{run.name}",
        "chosen_by": chosen_by,
        "samples": record["samples"],
        "b2_samples": record["b2_samples"],
        "collect_seconds": record["collect_seconds"],
        "fit_seconds": record["fit_seconds"],
        "final_loss": record["losses"][-1],
        "validation": summary_only,
        "note": "behaviour cloning (the move to B2's known minimum on distorted B2; the zero action, i.e. the learned "
        "curvature's step, on generated cells); no RL updates",
    }
    (INSTALL_DIR / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    print(f"installed {run / 'agent'} in {INSTALL_DIR}")


def overlap(split: str, pool: list, b2_minimum, also: Path | None, out: Path) -> None:
    """Which Al–Fe family cells of ``split`` match a training structure of the clone (a pool cell or the relaxed B2
    cell) under StructureMatcher; writes an ``--exclude-cells`` report for ``learned_curvature_families.py`` that
    also holds the cells of ``also`` (e.g. the curvature model's own ``fit_curvature.py --overlap`` report)."""
    t0 = time.perf_counter()
    training = [*pool, b2_minimum]
    names = [*(f"pool cell {i} (seed {cell.info.get('pool_seed')})" for i, cell in enumerate(pool)), "relaxed B2 AlFe"]
    exclude: dict[str, list[str]] = {}
    checked = 0
    for name, spec in FAMILIES.items():
        if spec.calculator != "lammps":
            continue
        cells = test_family(name, split).cells
        checked += len(cells)
        for i, k in training_matches(cells, training):
            exclude.setdefault(f"{name}[{i}]", []).append(f"clone training structure: {names[k]}")
    matched = sorted(exclude)
    if also is not None:
        for cell, why in json.loads(also.read_text())["exclude"].items():
            exclude.setdefault(cell, []).extend(f"curvature model: {reason}" for reason in why)
    report = {
        "command": f"python pipelines/clone_curvature_residual.py --overlap {split} --also-exclude {also} --overlap-out {out}",
        "split": split,
        "matcher": "sb3_crystal.structures.families.training_matches (StructureMatcher ltol 0.2, stol 0.3, angle_tol 5, "
        "primitive_cell, scale; same reduced formula only)",
        "family_cells": checked,
        "training_structures": len(training),
        "match_clone_training": matched,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "exclude": exclude,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(matched)} of {checked} {split} cells match a clone training structure; wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b2-episodes", type=int, default=600)
    parser.add_argument("--pool-episodes", type=int, default=200)
    parser.add_argument("--b2-beta", type=float, default=0.6, help="largest β of the B2 episodes, Å")
    parser.add_argument("--b2-beta-min", type=float, default=0.05)
    parser.add_argument("--max-displacement", type=float, default=0.4, help="correction per component at |a| = 1, Å")
    parser.add_argument(
        "--collect-epsilon",
        type=float,
        default=0.005,
        help="episodes end at this fmax, eV/Å: states below the relaxers' 0.05 and 0.01 are labelled too",
    )
    parser.add_argument("--mul", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--pool-seed", type=int, default=40_000)
    parser.add_argument("--pool-file", type=Path, default=Path("runs/curvature_pool.extxyz"))
    parser.add_argument("--family", nargs="+", default=["random_4-8_beta0.3", "random_4-8_beta0.5"])
    parser.add_argument("--eval-cells", type=int, default=12)
    parser.add_argument("--b2-eval-starts", type=int, default=20)
    parser.add_argument("--b2-eval-seed", type=int, default=1000)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path("runs/clone_curvature_residual"))
    parser.add_argument(
        "--install", type=Path, default=None, help="no training: install this finished run's agent as the shipped one"
    )
    parser.add_argument("--chosen-by", default="", help="with --install: how the run was chosen (recorded)")
    parser.add_argument("--overlap", choices=SPLITS, default=None, help="no training: check this split (see overlap())")
    parser.add_argument("--also-exclude", type=Path, default=None, help="with --overlap: cells to exclude as well")
    parser.add_argument("--overlap-out", type=Path, default=None, help="with --overlap: the report's path")
    args = parser.parse_args()
    if args.overlap is not None:
        if args.overlap_out is None:
            parser.error("--overlap needs --overlap-out")
        pool = training_pool(args.pool, args.pool_seed, args.pool_file)
        overlap(args.overlap, pool, CrystalRelaxEnv(structures="AlFe-B2").dataset[0], args.also_exclude, args.overlap_out)
        return
    if args.install is not None:
        install(args.install, args.chosen_by)
        return
    for value in (args.seed, EPISODE_SEEDS * args.seed + args.b2_episodes + args.pool_episodes):
        check_training_seed(value, "--seed (its episode seeds)")
    warnings.simplefilter("ignore")
    th.manual_seed(args.seed)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = dict(ENV_KWARGS, max_displacement=args.max_displacement, epsilon=args.collect_epsilon)
    pool = training_pool(args.pool, args.pool_seed, args.pool_file)
    generator = pool_generator(pool, 0.2, settings["min_distance"])
    env = CrystalRelaxEnv(**settings, generator=generator, n_max=16)

    t0 = time.perf_counter()
    samples = collect(env, args.b2_episodes, args.pool_episodes, (args.b2_beta_min, args.b2_beta), args.seed)
    collect_s = time.perf_counter() - t0
    n_b2 = int((samples.structure_indices == 0).sum())
    print(f"{len(samples)} samples ({n_b2} B2) in {collect_s:.0f} s", flush=True)
    policy_kwargs = {"mul": args.mul, "n_layers": args.layers, "lmax": 1}
    model = CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=policy_kwargs, seed=args.seed)
    t0 = time.perf_counter()
    losses = pretrain_actor(model, samples, epochs=args.epochs, batch_size=128, learning_rate=2e-3, seed=args.seed, verbose=0)
    fit_s = time.perf_counter() - t0
    print(f"regression loss {losses[0]:.4f} -> {losses[-1]:.4f} in {fit_s:.0f} s", flush=True)
    save_agent(model, args.out / "agent")
    save_samples(samples, args.out / "demonstrations.npz")

    sets = {name: test_family(name, "validation", n_cells=args.eval_cells).starts for name in args.family}
    sets["b2_beta0.5"] = b2_starts(env.dataset[0], args.b2_eval_starts, args.b2_eval_seed)
    results: dict[str, dict] = {}
    for label, agent in (("zero action", zero_action_agent(env.n_max, settings)), ("clone", model)):
        for name, starts in sets.items():
            rows = relax_starts(agent, starts, args.fmax, 300)
            entry = summary(rows) | {"calls": [r["force_calls"] for r in rows], "stops": [r["stop"] for r in rows]}
            results[f"{label} | {name}"] = entry
            print(label, name, json.dumps({k: v for k, v in entry.items() if k not in ("calls", "stops")}), flush=True)
    record = {
        "command": "python pipelines/clone_curvature_residual.py " + " ".join(sys.argv[1:]),
        "settings": settings,
        "policy_kwargs": policy_kwargs,
        "samples": len(samples),
        "b2_samples": n_b2,
        "collect_seconds": round(collect_s, 1),
        "fit_seconds": round(fit_s, 1),
        "losses": losses,
        "results": results,
    }
    (args.out / "result.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Train a residual agent on top of the learned curvature by RL on generated structures; judge it on validation.

    python pipelines/train_curvature_agent.py --steps 20000 --seed 0 --out runs/curvature_s0

The recipe (issue 13): TD3 + CrystalTFNPolicy (tiny) on structures whose minimum nobody knows, with the
relaxation's history in the observation (``history=2``), the learned curvature's quasi-Newton step as the classical
proposal (``proposal="curvature"``, :mod:`sb3_crystal.curvature`) and actions that correct it
(``action_mode="residual"``: a zero action is that step, i.e. :class:`~sb3_crystal.relax.LearnedCurvature`), the
trust region on (refused tries cost force calls), ε 0.05 eV/Å. A correction is scaled by the proposal's length
(``action_scale="proposal"``): a fixed-size correction holds the atoms off the minimum (in a first try with
``"fixed"`` corrections of 0.05 Å and the ``log_ratio`` reward, 21 of 24 validation starts stalled after 2,000 steps,
fmax hovering at 0.05–0.3 eV/Å; docs/data/curvature_agent_rl/pilot_fixed_scale.json). The
actor's output layer starts at zero, so the untrained agent is the zero action and RL only has to find corrections
that pay.

Exploration is Gaussian noise on the action (``--action-noise``, in action units). State noise alone cannot
explore here: with a zero output layer the actor answers every perturbed state with the same zero action, which
is why the L-BFGS residual runs of ``train_history_agent.py`` never moved.

Training structures: a pool of random symmetric Al–Fe cells of 4–8 atoms drawn once (``--pool`` cells, seed
``--pool-seed``, outside every evaluation split; cached in ``--pool-file``), each episode one of them rattled
afresh by β·U(−1, 1) (``--rattle``) — drawing a pyxtal cell costs about a second, more than an episode's force
calls. ``--pool 0`` draws a fresh generated cell every episode instead.

Every ``--eval-every`` steps and at the end the agent, through :class:`~sb3_crystal.relax.RLOptimizer` (its
default safeguards on), and the zero action relax the same validation starts; the learning curve (CSV + PNG), a
``result.json`` (command, seeds, wall and CPU time) and the agent folders (``final_agent``, ``best_agent``) go to
``--out``. The flags ``--history``, ``--proposal``, ``--action-mode``, ``--reward`` and ``--algo`` give the
ablation of issue 13.

B2 AlFe: ``--generator-fraction f`` draws only that fraction of episodes from the pool and distorts the relaxed B2
cell by ``--b2-beta`` in the others; ``--b2-eval-starts n`` adds n distorted B2 starts (seed ``--b2-eval-seed``) to
every evaluation, and the best agent is then the one with every start converged and the smallest sum of the two
mean force counts. ``--init-agent`` starts TD3 from an agent folder's actor (with its network and move settings)
instead of the zero action, e.g. the warm start of ``clone_curvature_residual.py``; with ``--demonstrations`` (that
script's ``demonstrations.npz``) the fine-tuning is TD3+BC (:class:`~sb3_crystal.algorithms.CrystalTD3BC`,
``--bc-alpha``).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from ase import Atoms
from ase.io import read, write
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalSAC, CrystalTD3, CrystalTD3BC
from sb3_crystal.benchmark.starts import make_starts
from sb3_crystal.callbacks.residual_start import ZeroActionStart
from sb3_crystal.exploration.demonstrations import ReferenceMoves
from sb3_crystal.relax import load_agent, save_agent
from sb3_crystal.relax.agent_io import SETTINGS_FILE
from sb3_crystal.structures.families import check_training_seed, test_family
from sb3_crystal.structures.generators import RandomCellGenerator, RattledCellGenerator, parse_generator_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_history_agent import ENV_KWARGS as HISTORY_ENV_KWARGS
from train_history_agent import GENERATORS, TINY_TFN, relax_starts, summary, zero_action_agent
from train_history_agent import EvalCallback as HistoryEvalCallback

#: Move settings an --init-agent brings with it.
MOVE_KEYS = ("action_mode", "max_displacement", "action_scale", "min_distance", "history", "proposal")

FRESH = GENERATORS["random"]

#: The history recipe's environment with the learned curvature's proposal and corrections scaled by it.
ENV_KWARGS = dict(HISTORY_ENV_KWARGS, proposal="curvature", action_scale="proposal", reward="log_ratio", max_steps=40)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def training_pool(count: int, seed: int, path: Path) -> list:
    """``count`` random symmetric Al–Fe cells of 4–8 atoms (seed ``seed``), read from ``path`` when cached there."""
    if path.exists():
        cells = read(path, index=":")
        if len(cells) == count and all(c.info.get("pool_seed") == seed for c in cells):
            return cells
    check_training_seed(seed, "--pool-seed")
    generator = RandomCellGenerator(atoms=(4, 8))
    cells = []
    t0 = time.perf_counter()
    for i in range(count):
        cell = generator.sample(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))))
        cell.info = {"source": f"pool{i}", "pool_seed": seed}
        cells.append(cell)
        if (i + 1) % 50 == 0:
            print(f"pool: {i + 1}/{count} cells ({time.perf_counter() - t0:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.extxyz")
    write(partial, cells)
    partial.replace(path)
    return cells


def pool_generator(pool: list, rattle: float, min_distance: float) -> RattledCellGenerator:
    """Each episode one of the ``pool`` cells, rattled afresh by β = ``rattle`` Å (their minima are unknown)."""
    return RattledCellGenerator(pool, beta=rattle, min_distance=min_distance, relaxed=False, names=["pool"])


def b2_starts(minimum: Atoms, count: int, seed: int, beta: float = 0.5) -> list:
    """``count`` distorted starts of the relaxed B2 AlFe cell ``minimum`` (start k from seed ``seed + k``, no pair
    closer than 1.5 Å): the B2 evaluation starts of the curvature-residual pipelines."""
    return make_starts(minimum, beta, count, seed, min_distance=1.5)


def judge(model: object, starts: list, b2: list, fmax: float) -> dict:
    """Success, median and mean force calls (and each start's calls) on ``starts``, plus ``b2_``-prefixed success,
    median and mean on the B2 starts ``b2`` when there are any."""
    rows = relax_starts(model, starts, fmax, 300)
    result = summary(rows) | {"calls": [r["force_calls"] for r in rows]}
    if b2:
        result |= {f"b2_{k}": v for k, v in summary(relax_starts(model, b2, fmax, 300)).items() if k != "n"}
    return result


def save_samples(samples: ReferenceMoves, path: Path) -> None:
    """Write ``samples`` to ``path`` (``.npz``; read back by :func:`load_samples`), for TD3+BC fine-tuning."""
    arrays = {f"obs_{key}": value for key, value in samples.observations.items()}
    np.savez_compressed(path, actions=samples.actions, betas=samples.betas, kinds=samples.structure_indices, **arrays)


def load_samples(path: Path) -> ReferenceMoves:
    """The samples :func:`save_samples` wrote."""
    with np.load(path) as data:
        observations = {key[4:]: data[key] for key in data.files if key.startswith("obs_")}
        return ReferenceMoves(observations, data["actions"], data["betas"], data["kinds"])


class EvalCallback(HistoryEvalCallback):
    """The history recipe's evaluation, also recording each start's force calls and the wall time; ties between
    evaluations of equal success and median are broken by the mean."""

    def __init__(self, starts: list, every: int, out: Path, fmax: float, b2_starts: list | None = None) -> None:
        super().__init__(starts, every, out, fmax)
        self.t0 = time.perf_counter()
        self.b2_starts = b2_starts or []

    def evaluate(self) -> None:
        result = judge(self.model, self.starts, self.b2_starts, self.fmax)
        result |= {"timesteps": self.num_timesteps, "wall_s": round(time.perf_counter() - self.t0, 1)}
        key = (result["success"], -result["median_calls"], -result["mean_calls"])
        if self.b2_starts:
            # both sets count: every start converged first, then the two means together
            key = (min(result["success"], result["b2_success"]), -(result["mean_calls"] + result["b2_mean_calls"]))
        self.curve.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "calls"}), flush=True)
        if self.best is None or key > self.best:
            self.best = key
            save_agent(self.model, self.out / "best_agent")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algo", choices=("td3", "sac"), default="td3")
    parser.add_argument("--history", type=int, default=ENV_KWARGS["history"])
    parser.add_argument("--proposal", choices=("curvature", "lbfgs", "none"), default=ENV_KWARGS["proposal"])
    parser.add_argument("--action-mode", choices=("residual", "absolute"), default=ENV_KWARGS["action_mode"])
    parser.add_argument("--max-displacement", type=float, default=ENV_KWARGS["max_displacement"])
    parser.add_argument("--action-scale", choices=("proposal", "fixed", "force"), default=ENV_KWARGS["action_scale"])
    parser.add_argument("--reward", default=ENV_KWARGS["reward"], help="log_ratio (MACS), calls, step, hybrid ...")
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--action-noise", type=float, default=0.3, help="σ of Gaussian action noise (action units)")
    parser.add_argument("--train-freq", type=int, default=4, help="env steps per gradient step")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--pool", type=int, default=300, help="training cells drawn once (0: a fresh cell per episode)")
    parser.add_argument("--pool-seed", type=int, default=40_000)
    parser.add_argument("--pool-file", type=Path, default=Path("runs/curvature_pool.extxyz"))
    parser.add_argument("--rattle", type=float, default=0.2, help="β of each episode's rattle of a pool cell, Å")
    parser.add_argument(
        "--generator-fraction",
        type=float,
        default=1.0,
        help="fraction of episodes from the pool; the rest distort relaxed B2 AlFe by --b2-beta",
    )
    parser.add_argument("--b2-beta", type=float, default=0.5, help="β of the B2 episodes and B2 evaluation starts, Å")
    parser.add_argument("--b2-eval-starts", type=int, default=0, help="also evaluate on this many distorted B2 starts")
    parser.add_argument("--b2-eval-seed", type=int, default=1000, help="seed of the B2 evaluation starts")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--family", default="random_4-8_beta0.3", help="validation family")
    parser.add_argument("--eval-cells", type=int, default=12, help="cells of the family used (2 starts each)")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument(
        "--init-agent",
        type=Path,
        default=None,
        help="TD3 only: start from this agent folder's actor (e.g. clone_curvature_residual.py's), with its network "
        "and move settings, instead of the zero action",
    )
    parser.add_argument(
        "--demonstrations",
        type=Path,
        default=None,
        help="with --init-agent: TD3+BC (CrystalTD3BC) that keeps close to these samples (clone_curvature_residual.py's "
        "demonstrations.npz)",
    )
    parser.add_argument("--bc-alpha", type=float, default=0.02, help="α of TD3+BC (with --demonstrations)")
    parser.add_argument("--out", type=Path, default=Path("runs/curvature_agent"))
    args = parser.parse_args()
    if args.demonstrations is not None and args.init_agent is None:
        parser.error("--demonstrations needs --init-agent")
    if args.init_agent is not None and args.algo != "td3":
        parser.error("--init-agent needs --algo td3")
    return args


def main() -> None:
    args = parse_args()
    check_training_seed(args.seed, "--seed")
    args.out.mkdir(parents=True, exist_ok=True)
    th.manual_seed(args.seed)
    th.set_num_threads(1)
    settings = dict(
        ENV_KWARGS,
        history=args.history,
        proposal=args.proposal,
        action_mode=args.action_mode,
        max_displacement=args.max_displacement,
        action_scale=args.action_scale,
        reward=args.reward,
    )
    policy_kwargs = dict(TINY_TFN)
    init = None
    if args.init_agent is not None:
        init = load_agent(args.init_agent)
        saved = json.loads((args.init_agent / SETTINGS_FILE).read_text())
        policy_kwargs = saved.get("policy_kwargs") or {}
        # the actor's corrections mean what they meant when it was made
        settings |= {key: init.env_settings[key] for key in MOVE_KEYS if key in init.env_settings}
    if args.pool > 0:
        pool = training_pool(args.pool, args.pool_seed, args.pool_file)
        generator = pool_generator(pool, args.rattle, settings["min_distance"])
    else:
        generator = parse_generator_spec(FRESH)

    family = test_family(args.family, "validation", n_cells=args.eval_cells)
    starts = family.starts
    env = CrystalRelaxEnv(
        **settings,
        generator=generator,
        generator_fraction=args.generator_fraction,
        beta=args.b2_beta,
        n_max=max(16, family.max_atoms),
    )
    b2 = b2_starts(env.dataset[0], args.b2_eval_starts, args.b2_eval_seed, args.b2_beta)
    baseline = None
    if args.action_mode == "residual":
        baseline = judge(zero_action_agent(env.n_max, settings), starts, b2, args.fmax)
        print("zero action:", json.dumps({k: v for k, v in baseline.items() if k != "calls"}), flush=True)
    initial = None
    if init is not None:
        initial = judge(init, starts, b2, args.fmax)
        print("initial agent:", json.dumps({k: v for k, v in initial.items() if k != "calls"}), flush=True)

    n_actions = env.action_space.shape[0]
    common = dict(
        policy_kwargs=policy_kwargs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        batch_size=64,
        buffer_size=100_000,
        learning_starts=300,
        train_freq=args.train_freq,
        gradient_steps=1,
        seed=args.seed,
        verbose=0,
    )
    callbacks: list[BaseCallback] = []
    if args.algo == "td3":
        noise = NormalActionNoise(np.zeros(n_actions), args.action_noise * np.ones(n_actions))
        if args.demonstrations is not None:
            demonstrations = load_samples(args.demonstrations)
            model = CrystalTD3BC(
                "CrystalTFNPolicy", env, action_noise=noise, demonstrations=demonstrations, bc_alpha=args.bc_alpha, **common
            )
        else:
            model = CrystalTD3("CrystalTFNPolicy", env, action_noise=noise, **common)
        if init is not None:
            model.actor.load_state_dict(init.policy.actor.state_dict())
            model.actor_target.load_state_dict(init.policy.actor.state_dict())
        elif args.action_mode == "residual":
            callbacks.append(ZeroActionStart())
    else:
        model = CrystalSAC("CrystalTFNPolicy", env, **common)
    evaluation = EvalCallback(starts, args.eval_every, args.out, args.fmax, b2)
    callbacks.append(evaluation)
    t0, c0 = time.perf_counter(), cpu_seconds()
    model.learn(args.steps, callback=callbacks)
    train_s, train_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if not evaluation.curve or evaluation.curve[-1]["timesteps"] != model.num_timesteps:
        evaluation.evaluate()
    save_agent(model, args.out / "final_agent")
    with open(args.out / "curve.csv", "w", newline="") as handle:
        fields = [k for k in evaluation.curve[0] if k != "calls"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(evaluation.curve)
    record = {
        "command": "python pipelines/train_curvature_agent.py " + " ".join(sys.argv[1:]),
        "settings": settings,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_wall_s": train_s,
        "train_cpu_s": train_cpu,
        "family": args.family,
        "eval_starts": len(starts),
        "zero_action": baseline,
        "initial_agent": initial,
        "curve": evaluation.curve,
    }
    (args.out / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(5, 3.2))
        steps = [c["timesteps"] for c in evaluation.curve]
        axes.plot(steps, [c["mean_calls"] for c in evaluation.curve], "o-", label="agent (mean)")
        if baseline is not None:
            axes.axhline(baseline["mean_calls"], color="gray", ls="--", label="zero action (mean)")
        axes.set_xlabel(f"{args.algo.upper()} steps")
        axes.set_ylabel(f"force calls to {args.fmax} eV/Å")
        axes.legend()
        figure.tight_layout()
        figure.savefig(args.out / "curve.png", dpi=120)
    except ImportError:  # pragma: no cover
        pass
    print(f"trained {model.num_timesteps} steps in {train_s:.0f} s ({train_cpu:.0f} CPU s); results in {args.out}")


if __name__ == "__main__":
    main()

"""Train a history-aware agent by RL on generated structures, and judge it on a validation family.

    python pipelines/train_history_agent.py --steps 4000 --seed 0 --out runs/history_s0

The recipe (issue 13): TD3 + CrystalTFNPolicy ("small" preset) on structures whose minimum nobody knows — fresh
random symmetric Al–Fe cells of 4–8 atoms rattled by 0.2 Å and bcc/B2 supercells from ideal sites plus a rattle
(``generator=``) — with the observation's optimizer history (``history=2``), the L-BFGS proposal computed from it
(``proposal="lbfgs"``) and actions that correct that proposal (``action_mode="residual"``: a zero action is the
L-BFGS step), the trust region on (rejected tries cost force calls, and the ``calls`` reward pays for them), ε 0.05
eV/Å. No known minimum enters training. The actor's output layer starts at zero, so the untrained agent is the
L-BFGS proposal and RL only has to find corrections that pay.

Every ``--eval-every`` steps and at the end, the agent (through :class:`~sb3_crystal.relax.RLOptimizer`, its
default safeguards on) and the zero-action proposal relax the same starts of a validation family
(:func:`~sb3_crystal.structures.families.test_family`, seeds reserved for evaluation); the table, the learning curve
(CSV + PNG) and the agent folder of the best evaluation go to ``--out``. Classical baselines on those starts come
from ``benchmarks/unseen_families.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import make_calculator
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax import CrystalAgent, RLOptimizer, ZeroPolicy, save_agent
from sb3_crystal.structures.families import check_training_seed, test_family

GENERATORS = {
    "random": "generate:random_cell,atoms=4-8,rattle=0.2",
    "bcc": "generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,rattle=0.1",
    "b2": "generate:solid_solution,lattice=b2,size=2,vacancies=0-1,antisites=0-1,rattle=0.1",
}

ENV_KWARGS = dict(
    structures="AlFe-B2",
    history=2,
    proposal="lbfgs",
    action_mode="residual",
    trust_region=True,
    max_displacement=0.05,
    action_scale="fixed",
    epsilon=0.05,
    reward="calls",
    max_steps=60,
    min_distance=1.2,
)

TINY_TFN = dict(n_layers=1, mul=8, lmax=1, num_basis=8, radial_neurons=16)


def zero_action_agent(n_max: int, env_settings: dict | None = None) -> CrystalAgent:
    """The residual agent before training: a :class:`ZeroPolicy` with this recipe's observation and move settings."""
    settings = dict(ENV_KWARGS if env_settings is None else env_settings)
    layout = ObservationLayout(n_max=n_max, history=settings["history"], proposal=settings["proposal"])
    return CrystalAgent(ZeroPolicy(), n_max, settings, ("Al", "Fe"), observation=layout.to_dict())


def relax_starts(model: object, starts: list, fmax: float, steps: int) -> list[dict]:
    """Relax every start with RLOptimizer (default safeguards); force calls, success, wall time."""
    calc = make_calculator("lammps")
    rows = []
    for start in starts:
        atoms = start.copy()
        atoms.calc = calc
        t0 = time.perf_counter()
        optimizer = RLOptimizer(atoms, model=model, logfile=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converged = optimizer.run(fmax=fmax, steps=steps)
        rows.append(
            {
                "force_calls": optimizer.force_calls,
                "converged": bool(converged),
                "wall_s": time.perf_counter() - t0,
                "stop": optimizer.stop_reason or "",
            }
        )
    return rows


def summary(rows: list[dict]) -> dict:
    calls = np.array([r["force_calls"] for r in rows if r["converged"]], dtype=float)
    return {
        "success": float(np.mean([r["converged"] for r in rows])),
        "median_calls": float(np.median(calls)) if len(calls) else float("nan"),
        "mean_calls": float(calls.mean()) if len(calls) else float("nan"),
        "n": len(rows),
    }


class EvalCallback(BaseCallback):
    """Evaluate on the validation starts every ``every`` steps; keep the best agent (success, then median calls)."""

    def __init__(self, starts: list, every: int, out: Path, fmax: float) -> None:
        super().__init__()
        self.starts, self.every, self.out, self.fmax = starts, every, out, fmax
        self.curve: list[dict] = []
        self.best: tuple[float, float] | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.evaluate()
        return True

    def evaluate(self) -> None:
        result = summary(relax_starts(self.model, self.starts, self.fmax, 300))
        result["timesteps"] = self.num_timesteps
        self.curve.append(result)
        print(json.dumps(result), flush=True)
        key = (result["success"], -result["median_calls"])
        if self.best is None or key > self.best:
            self.best = key
            save_agent(self.model, self.out / "best_agent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--family", default="random_4-8_beta0.3", help="validation family")
    parser.add_argument("--eval-cells", type=int, default=8, help="cells of the family used (2 starts each)")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path("runs/history_agent"))
    args = parser.parse_args()
    check_training_seed(args.seed, "--seed")
    args.out.mkdir(parents=True, exist_ok=True)
    th.manual_seed(args.seed)
    th.set_num_threads(1)

    family = test_family(args.family, "validation", n_cells=args.eval_cells)
    starts = family.starts
    env = CrystalRelaxEnv(**ENV_KWARGS, generator=GENERATORS["random"], n_max=max(16, family.max_atoms))
    baseline = summary(relax_starts(zero_action_agent(env.n_max), starts, args.fmax, 300))
    print("zero-action proposal:", json.dumps(baseline), flush=True)

    model = CrystalTD3(
        "CrystalTFNPolicy",
        env,
        policy_kwargs=TINY_TFN,
        learning_rate=3e-4,
        gamma=0.95,
        batch_size=64,
        buffer_size=50_000,
        learning_starts=300,
        train_freq=1,
        gradient_steps=1,
        state_noise={"level": 0.2},
        seed=args.seed,
        verbose=0,
    )
    with th.no_grad():  # the untrained agent is the proposal: a zero output layer
        output = model.actor.tfn.output
        for parameter in [*output.lin2.parameters(), *output.self_connection.parameters()]:
            parameter.zero_()
        model.actor_target.load_state_dict(model.actor.state_dict())
    callback = EvalCallback(starts, args.eval_every, args.out, args.fmax)
    t0 = time.perf_counter()
    model.learn(args.steps, callback=callback)
    train_s = time.perf_counter() - t0
    if not callback.curve or callback.curve[-1]["timesteps"] != model.num_timesteps:
        callback.evaluate()
    with open(args.out / "curve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(callback.curve[0]))
        writer.writeheader()
        writer.writerows(callback.curve)
    record = {
        "command": f"python pipelines/train_history_agent.py --steps {args.steps} --seed {args.seed}",
        "train_seconds": train_s,
        "family": args.family,
        "eval_starts": len(starts),
        "zero_action": baseline,
        "curve": callback.curve,
    }
    (args.out / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(5, 3.2))
        axes.plot([c["timesteps"] for c in callback.curve], [c["median_calls"] for c in callback.curve], "o-", label="agent")
        axes.axhline(baseline["median_calls"], color="gray", ls="--", label="zero action (L-BFGS proposal)")
        axes.set_xlabel("TD3 steps")
        axes.set_ylabel(f"median force calls to {args.fmax} eV/Å")
        axes.legend()
        figure.tight_layout()
        figure.savefig(args.out / "curve.png", dpi=120)
    except ImportError:  # pragma: no cover
        pass
    print(f"trained {args.steps} steps in {train_s:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()

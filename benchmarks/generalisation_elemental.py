"""Issue 6 §4, paper Fig. 4b, c: an agent trained on single-element Al and Fe cells relaxes AlFe without retraining.

    python benchmarks/generalisation_elemental.py                      # trains (8,000 steps, seed 0), then benchmarks
    python benchmarks/generalisation_elemental.py --model agent.zip --out results/elemental_agent

Without ``--model`` it trains TD3 + CrystalTFNPolicy with the recipe of ``pipelines/train_default_agent.py``
(Gaussian action noise σ 0.1, hybrid reward (1, 0, 0.5), force-adaptive action scale, ε 0.05 eV/Å, β 0.5 Å,
learning rate 3e-4, γ 0.99; saddle points of the potential pushed into true minima) on the package's seven
single-element prototypes (:data:`sb3_crystal.envs.AL_FE_ELEMENTAL`: Al fcc/hcp/bcc/I4mmm, Fe bcc/fcc/hcp) for
``--steps`` steps (default 8,000: 747 s on the project's loaded 2-core machine). Every ``--eval-freq`` steps the
agent relaxes 2 fixed starts of every training cell; the model with the best evaluation *on the training cells*
(success, then fewest steps) is kept, so the AlFe test cells never pick the model (they are only logged, as
validation sets ``B2`` and ``hex``).

Then the same seeded starts (β 0.5 Å, no pair closer than 1.5 Å) of B2 AlFe and of simple hexagonal AlFe go
through the agent, the hybrid (agent to 0.1 eV/Å, then BFGS) and BFGS / BFGSLineSearch / FIRE / GPMin, at most
``--max-steps`` (300) steps per run, to ε 0.1, 0.05 and 0.01 eV/Å. Simple hexagonal AlFe is a saddle point of this
potential: its starts may legitimately fall into other minima ("ref min" no, so "same min" is not a failure there);
the escaped hex minimum (``saddles="escape"``) is benchmarked as well.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.noise import NormalActionNoise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the shipped agents' training pipelines
from train_default_agent import ENV as DEFAULT_ENV
from train_default_agent import TD3_SETTINGS

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
from sb3_crystal.benchmark.harness import format_table, run_benchmark, summarize, write_results
from sb3_crystal.callbacks import RelaxationEvalCallback
from sb3_crystal.envs import AL_FE_ELEMENTAL
from sb3_crystal.relax.agent_io import load_model
from sb3_crystal.structures import StructureDataset

#: Training environment: the default agent's recipe on the single-element set; n_max 4 (Al-I4mmm, the largest cell)
#: is given explicitly so that the 2-atom validation cells share the training observation shape.
ENV: dict[str, Any] = {**DEFAULT_ENV, "structures": AL_FE_ELEMENTAL, "n_max": 4}
#: Test cells: name → (prototype, saddle policy).
TEST_STRUCTURES = {
    "AlFe-B2": ("AlFe-B2", "keep"),
    "AlFe-hex (saddle)": ("AlFe-hex", "keep"),
    "AlFe-hex (escaped)": ("AlFe-hex", "escape"),
}
CLASSICAL = ["BFGS", "BFGSLineSearch", "FIRE", "GPMin"]


def train_agent(
    env_kwargs: dict[str, Any],
    steps: int,
    seed: int,
    work: Path,
    validation: dict[str, dict[str, Any]] | None = None,
    eval_freq: int = 2000,
    eval_episodes: int = 2,
    command: str = "",
) -> Path:
    """Train TD3 + CrystalTFNPolicy with the default agent's recipe; return the best model on the training cells.

    :param env_kwargs: :class:`CrystalRelaxEnv` arguments of the training environment.
    :param steps: environment steps.
    :param seed: TD3 seed.
    :param work: run folder: ``best/best_model_eps<ε>.zip``, ``final.zip``, ``evaluations.csv``, ``training.json``.
    :param validation: validation sets (logged only, never used to pick the model).
    :param eval_freq: steps between evaluations.
    :param eval_episodes: fixed test starts per training cell at each evaluation.
    :param command: the command line, recorded in ``training.json``.
    :return: the best evaluation's model (the final one if no evaluation ran).
    """
    th.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    env = CrystalRelaxEnv(**env_kwargs)
    print(env.dataset.summary(), flush=True)
    n_actions = env.action_space.shape[0]
    model = CrystalTD3(
        "CrystalTFNPolicy",
        env,
        seed=seed,
        action_noise=NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions)),
        **TD3_SETTINGS,
    )
    evaluation = RelaxationEvalCallback(
        eval_freq=eval_freq,
        n_episodes=eval_episodes,
        per_structure=True,
        max_steps=100,
        seed=10_000,
        validation=validation,
        best_model_save_path=work / "best",
        verbose=1,
    )
    start = time.time()
    model.learn(steps, callback=evaluation, progress_bar=False)
    wall = time.time() - start
    model.save(work / "final.zip")
    if evaluation.history:
        with open(work / "evaluations.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(evaluation.history[0]))
            writer.writeheader()
            writer.writerows(evaluation.history)
    meta = {"command": command, "steps": steps, "seed": seed, "wall_s": round(wall), "env": env.get_init_kwargs()}
    (work / "training.json").write_text(json.dumps(meta, indent=1, default=str))
    print(f"trained {steps} steps in {wall:.0f} s", flush=True)
    best = work / "best" / f"best_model_eps{env_kwargs['epsilon']:g}.zip"
    return best if best.is_file() else work / "final.zip"


def alfe_test_cells() -> list:
    """The relaxed AlFe test cells, each named (``info["name"]``) and carrying its minimum report."""
    minima = []
    for name, (prototype, saddles) in TEST_STRUCTURES.items():
        minimum = StructureDataset(prototype, saddles=saddles).minima[0]
        minimum.info["name"] = name
        minima.append(minimum)
    return minima


def experiment_parser(
    description: str, out: str, steps: int, n_starts: int, start_seed: int, fmax: list[float]
) -> argparse.ArgumentParser:
    """The options both generalisation experiments share (train or ``--model``, then benchmark), with their defaults."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an agent (SB3 zip or agent folder); default: train one")
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--steps", type=int, default=steps, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--eval-freq", type=int, default=2000, help="training steps between evaluations")
    parser.add_argument("--n-starts", type=int, default=n_starts, help="benchmark starts per test cell")
    parser.add_argument("--start-seed", type=int, default=start_seed, help="start k uses seed start_seed + k")
    parser.add_argument("--max-steps", type=int, default=300, help="step cap of every benchmark run")
    parser.add_argument("--fmax", type=float, nargs="+", default=fmax, help="thresholds ε, eV/Å")
    return parser


def benchmark_agent(model_path: Path, cells: list, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The agent, its hybrid and :data:`CLASSICAL` on the same seeded starts (β 0.5 Å) of ``cells``, per the options."""
    print(f"benchmarking {model_path}", flush=True)
    model = load_model(model_path, allow_pickle=True)  # a zip this script or you trained
    relaxers = [*CLASSICAL, AgentRelaxer(model, name="RL"), HybridRelaxer(model)]
    return run_benchmark(
        cells,
        relaxers,
        beta=0.5,
        fmaxes=args.fmax,
        n_starts=args.n_starts,
        seed=args.start_seed,
        max_steps=args.max_steps,
        min_distance=1.5,
    )


def main() -> None:
    parser = experiment_parser(__doc__, "results/generalisation_elemental", 8_000, 20, 200, [0.1, 0.05, 0.01])
    args = parser.parse_args()
    th.set_num_threads(1)
    model_path = args.model
    if model_path is None:
        validation = {"B2": {"structures": "AlFe-B2"}, "hex": {"structures": "AlFe-hex", "saddles": "keep"}}
        command = "python " + " ".join(sys.argv)
        model_path = train_agent(ENV, args.steps, args.seed, args.out / "training", validation, args.eval_freq, 2, command)
    start = time.time()
    rows = benchmark_agent(model_path, alfe_test_cells(), args)
    title = f"Single-element-trained agent on AlFe, β = 0.5 Å, {args.n_starts} starts per cell (seeds {args.start_seed}–)"
    write_results(rows, args.out, title=title)
    print(format_table(summarize(rows)))
    print(f"benchmark: {time.time() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()

"""Issue-4 evidence: TD3 + CrystalTFNPolicy on B2 AlFe with and without state noise, and with the curriculum.

Run by hand, one variant per process (two fit the 2-core machine side by side):

    python pipelines/train_b2.py --variant state_noise --steps 25000 --seed 0 --out results/train_b2
    python pipelines/train_b2.py --variant action_noise --steps 25000 --seed 0 --out results/train_b2
    python pipelines/train_b2.py --variant curriculum --steps 25000 --seed 0 --out results/train_b2
    python pipelines/train_b2.py --variant curriculum_action_noise --steps 30000 --seed 0 --out results/b2_target \\
        --install                                             # the shipped "b2" agent (sb3_crystal/relax/b2_agent)
    python pipelines/train_b2.py --plot results/train_b2     # learning curves + comparison with BFGS

Each run logs its evaluations (20 fixed starts, β = 0.5 Å, ≤ 100 steps) to ``<out>/<variant>_s<seed>.csv``
and saves the final model; ``--plot`` draws the curves and relaxes the same 50 fresh starts with the final
agents and with BFGS at the final ε.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
from stable_baselines3.common.noise import NormalActionNoise

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3, CrystalTD3BC
from sb3_crystal.callbacks import RelaxationEvalCallback
from sb3_crystal.exploration.demonstrations import REFERENCE_MOVES_SEED, pretrain_actor, reference_moves
from sb3_crystal.exploration.expert import add_expert_transitions

ENV = {"structures": "AlFe-B2", "beta": 0.5, "max_steps": 100}
FINAL_EPSILON = 0.05
FINETUNE_EPSILON = 0.03
CURRICULUM = [
    {"reward": "hybrid", "reward_weights": [1.0, 0.0, 0.5], "epsilon": 0.1, "target_steps": 12, "min_success": 0.9},
    {"reward": "step", "epsilon": 0.1, "target_steps": 8, "min_success": 0.9},
    {"reward": "step", "epsilon": FINAL_EPSILON},
]
#: the curriculum with a last stage below the target ε: reaching 0.03 eV/Å in as few steps leaves a margin at 0.05
CURRICULUM_TIGHT = [
    *CURRICULUM[:-1],
    {"reward": "step", "epsilon": FINAL_EPSILON, "target_steps": 3, "min_success": 0.9},
    {"reward": "step", "epsilon": 0.03},
]
TD3_SETTINGS = {
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "batch_size": 100,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "tau": 0.005,
    "policy_delay": 2,
    "target_policy_noise": 0.05,
    "target_noise_clip": 0.1,
}


def run_name(
    variant: str,
    seed: int,
    action_scale: str = "force",
    expert_episodes: int = 0,
    tag: str = "",
    max_displacement: float = 0.5,
    pretrain_samples: int = 0,
    bc_alpha: float | None = None,
) -> str:
    """The name of a run's files in ``out``: ``<name>.csv``, ``<name>.zip``, ``<name>_best/``."""
    expert = f"_expert{expert_episodes}" if expert_episodes else ""
    dmax = f"_dmax{max_displacement:g}" if max_displacement != 0.5 else ""
    pretrain = f"_pre{pretrain_samples}" if pretrain_samples else ""
    bc = f"_bc{bc_alpha:g}" if bc_alpha is not None else ""
    return f"{variant}_{action_scale}{expert}{pretrain}{bc}{tag}{dmax}_s{seed}"


def train(
    variant: str,
    steps: int,
    seed: int,
    out: Path,
    action_scale: str = "force",
    expert_episodes: int = 0,
    policy_kwargs: dict | None = None,
    tag: str = "",
    init: Path | None = None,
    max_displacement: float = 0.5,
    checkpoint_every: int = 0,
    pretrain_samples: int = 0,
    pretrain_epochs: int = 60,
    bc_alpha: float | None = None,
    bc_samples: int = 20_000,
) -> RelaxationEvalCallback:
    th.set_num_threads(1)
    reward = {"reward": "hybrid", "reward_weights": (1.0, 0.0, 0.5), "epsilon": FINAL_EPSILON}
    settings = dict(TD3_SETTINGS)
    if variant == "finetune":  # from a trained model: the step reward at a tighter ε, less noise, a smaller step size
        reward = {"reward": "step", "epsilon": FINETUNE_EPSILON}
        settings.update(learning_rate=1e-4, learning_starts=200)
    env = CrystalRelaxEnv(**ENV, **reward, action_scale=action_scale, max_displacement=max_displacement)
    n_actions = env.action_space.shape[0]
    exploration = {
        "state_noise": {"state_noise": {"level": 0.2}},
        "action_noise": {"action_noise": NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions))},
        "curriculum": {"state_noise": {"level": 0.2}},
        "curriculum_action_noise": {"action_noise": NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions))},
        "finetune": {"action_noise": NormalActionNoise(np.zeros(n_actions), 0.05 * np.ones(n_actions))},
        "curriculum_tight": {"action_noise": NormalActionNoise(np.zeros(n_actions), 0.1 * np.ones(n_actions))},
    }[variant]
    if bc_alpha is None:
        model = CrystalTD3("CrystalTFNPolicy", env, seed=seed, policy_kwargs=policy_kwargs, **settings, **exploration)
    else:  # TD3+BC: the actor stays close to the reference moves while TD3 trains it
        model = CrystalTD3BC(
            "CrystalTFNPolicy", env, seed=seed, policy_kwargs=policy_kwargs, bc_alpha=bc_alpha, **settings, **exploration
        )
    if init is not None:
        model.set_parameters(str(init), exact_match=True)
    name = run_name(variant, seed, action_scale, expert_episodes, tag, max_displacement, pretrain_samples, bc_alpha)
    start = time.time()
    n_samples = max(pretrain_samples, bc_samples if bc_alpha is not None else 0)
    samples = reference_moves(env, n_samples, seed=REFERENCE_MOVES_SEED + seed) if n_samples else None
    if pretrain_samples:  # regression onto the move back to the minimum (sb3_crystal.exploration.demonstrations)
        pretrain_actor(model, samples, epochs=pretrain_epochs, seed=seed)
    if isinstance(model, CrystalTD3BC):
        model.set_demonstrations(samples)
    evaluation = RelaxationEvalCallback(
        eval_freq=1000,
        n_episodes=20,
        max_steps=100,
        seed=10_000,
        curriculum=CURRICULUM_TIGHT if variant == "curriculum_tight" else (CURRICULUM if "curriculum" in variant else None),
        best_model_save_path=out / f"{name}_best",  # TD3 can collapse late: keep the best evaluation's model
    )
    if expert_episodes:
        add_expert_transitions(model, env, expert_episodes, seed=20_000)
    callbacks: list = [evaluation]
    if checkpoint_every:  # every model, for a selection on held-out starts (pipelines/select_b2.py)
        callbacks.append(CheckpointCallback(checkpoint_every, str(out / f"{name}_checkpoints"), name_prefix="model"))
    out.mkdir(parents=True, exist_ok=True)
    model.learn(steps, callback=CallbackList(callbacks))
    if steps == 0:  # pretraining only: one evaluation, which saves the model as the run's best
        evaluation.evaluate()
    model.save(out / f"{name}.zip")
    with open(out / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(evaluation.history[0]))
        writer.writeheader()
        writer.writerows(evaluation.history)
    (out / f"{name}.json").write_text(
        json.dumps({"variant": variant, "steps": steps, "seed": seed, "wall_s": time.time() - start})
    )
    print(f"{name}: {steps} steps in {time.time() - start:.0f} s")
    return evaluation


def plot(folder: Path, n_starts: int = 50, compare: bool = True) -> None:
    """Learning curves of every run in ``folder`` and force calls of the final agents next to BFGS and FIRE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
    from sb3_crystal.benchmark.harness import format_table, run_benchmark, summarize, write_results
    from sb3_crystal.structures import StructureDataset

    runs = sorted(folder.glob("*.csv"))
    runs = [r for r in runs if not r.name.startswith(("runs", "summary"))]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run in runs:
        with open(run) as handle:
            rows = [r for r in csv.DictReader(handle) if r["set"] == "eval"]
        t = [int(r["timesteps"]) for r in rows]
        for axis, key in zip(axes, ("success_rate", "relaxation_steps", "final_fmax"), strict=True):
            axis.plot(t, [float(r[key]) for r in rows], marker="o", ms=3, label=run.stem)
    for axis, label in zip(axes, ("success rate", "⟨L⟩ (steps, cap 100)", "⟨fmax⟩ at the last step (eV/Å)"), strict=True):
        axis.set_xlabel("environment steps")
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(MaxNLocator(5))
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"TD3 + CrystalTFNPolicy on B2 AlFe (β = 0.5 Å, 20 fixed test starts, ε = {FINAL_EPSILON} eV/Å at the end)"
    )
    figure.tight_layout()
    figure.savefig(folder / "learning_curves.png", dpi=120)
    print(f"wrote {folder / 'learning_curves.png'}")
    if not compare:
        return

    minimum = StructureDataset("AlFe-B2").minima
    relaxers: list = ["BFGS", "FIRE"]
    for run in runs:
        model = CrystalTD3.load(folder / f"{run.stem}.zip")
        relaxers += [AgentRelaxer(model, name=f"RL {run.stem}"), HybridRelaxer(model, name=f"RL+BFGSLineSearch {run.stem}")]
    rows = run_benchmark(
        minimum, relaxers, beta=0.5, fmaxes=(0.1, FINAL_EPSILON), n_starts=n_starts, seed=100, min_distance=1.5
    )
    write_results(
        rows, folder / "comparison", title="B2 AlFe, β = 0.5 Å, fresh starts (seeds 100–149, no pair closer than 1.5 Å)"
    )
    print(format_table(summarize(rows)))


def install(best_model: Path, command: str) -> None:
    """Ship a B2 model as the package's ``"b2"`` agent (weights + plain-data settings, see ``save_agent``)."""
    from sb3_crystal.relax.agent_io import SHIPPED_AGENTS, save_agent

    folder = SHIPPED_AGENTS["b2"]
    save_agent(CrystalTD3.load(best_model), folder)
    (folder / "training.json").write_text(json.dumps({"command": command, "best_model": best_model.name}))
    print(f"installed {best_model} in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    variants = ["state_noise", "action_noise", "curriculum", "curriculum_action_noise", "curriculum_tight", "finetune"]
    parser.add_argument("--variant", choices=variants)
    parser.add_argument("--plot", type=Path, default=None, help="plot and compare the runs in this folder")
    parser.add_argument("--curves-only", action="store_true", help="with --plot: learning curves only, no comparison")
    parser.add_argument("--steps", type=int, default=25_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/train_b2"))
    parser.add_argument("--action-scale", choices=["fixed", "force"], default="force")
    parser.add_argument("--expert-episodes", type=int, default=0, help="BFGS episodes seeded into the replay buffer")
    parser.add_argument("--max-displacement", type=float, default=0.5, help="shift per unit action, Å")
    parser.add_argument("--init", type=Path, default=None, help="finetune: the trained model (SB3 zip) to start from")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also save the model every N steps")
    parser.add_argument("--install", action="store_true", help="ship the run's best model at ε 0.05 as the 'b2' agent")
    parser.add_argument("--pretrain-samples", type=int, default=0, help="regress the actor onto N reference moves first")
    parser.add_argument("--pretrain-epochs", type=int, default=60, help="passes over the reference moves")
    parser.add_argument("--bc-alpha", type=float, default=None, help="TD3+BC with this α (CrystalTD3BC)")
    parser.add_argument("--bc-samples", type=int, default=20_000, help="reference moves the TD3+BC term regresses onto")
    args = parser.parse_args()
    if args.plot is not None:
        plot(args.plot, compare=not args.curves_only)
        return
    name = run_name(
        args.variant,
        args.seed,
        args.action_scale,
        args.expert_episodes,
        max_displacement=args.max_displacement,
        pretrain_samples=args.pretrain_samples,
        bc_alpha=args.bc_alpha,
    )
    if not (args.install and (args.out / f"{name}_best").is_dir()):
        train(
            args.variant,
            args.steps,
            args.seed,
            args.out,
            args.action_scale,
            args.expert_episodes,
            init=args.init,
            max_displacement=args.max_displacement,
            checkpoint_every=args.checkpoint_every,
            pretrain_samples=args.pretrain_samples,
            pretrain_epochs=args.pretrain_epochs,
            bc_alpha=args.bc_alpha,
            bc_samples=args.bc_samples,
        )
    if args.install:  # an existing run is installed without training again
        best = args.out / f"{name}_best" / f"best_model_eps{FINAL_EPSILON}.zip"
        run = f"--variant {args.variant} --steps {args.steps} --seed {args.seed}"
        if args.pretrain_samples:
            run += f" --pretrain-samples {args.pretrain_samples} --pretrain-epochs {args.pretrain_epochs}"
        install(best, f"python pipelines/train_b2.py {run} --install")


if __name__ == "__main__":
    main()

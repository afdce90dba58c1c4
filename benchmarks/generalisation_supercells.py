"""Issue 6 §4, paper Fig. 5: an agent trained on one cell relaxes its supercells without retraining.

    python benchmarks/generalisation_supercells.py --out results/supercells              # trains the B2 agent first
    python benchmarks/generalisation_supercells.py --model agent.zip --out results/supercells

Without ``--model`` it trains the B2 curriculum agent of ``pipelines/train_b2.py`` (15,000 steps, seed 0) and uses
its best model at ε = 0.05. Then the same seeded starts (β = 0.5 Å) of B2 AlFe and of its 2×1×1 and 2×2×1 supercells
(2, 4 and 8 atoms; the agent saw only 2) go through the agent, the hybrid and BFGS / BFGSLineSearch / FIRE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
from sb3_crystal.benchmark.harness import format_table, run_benchmark, summarize, write_results
from sb3_crystal.relax.agent_io import load_model
from sb3_crystal.structures import StructureDataset, build_prototype

SUPERCELLS = {"B2 1x1x1": (1, 1, 1), "B2 2x1x1": (2, 1, 1), "B2 2x2x1": (2, 2, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="an agent (SB3 zip or agent folder); default: train one")
    parser.add_argument("--out", type=Path, default=Path("results/supercells"))
    parser.add_argument("--n-starts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=200)
    args = parser.parse_args()
    model_path = args.model
    if model_path is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
        from train_b2 import train

        train("curriculum", 15_000, 0, args.out / "training")
        model_path = args.out / "training" / "curriculum_force_s0_best" / "best_model_eps0.05.zip"
    model = load_model(model_path, allow_pickle=True)  # a zip this script or you trained
    structures = []
    for name, repeat in SUPERCELLS.items():
        atoms = build_prototype("AlFe-B2").repeat(repeat)
        atoms.info["source"] = name
        structures.append(atoms)
    minima = StructureDataset(structures).minima
    relaxers = ["BFGS", "BFGSLineSearch", "FIRE", AgentRelaxer(model, name="RL"), HybridRelaxer(model)]
    rows = run_benchmark(
        minima, relaxers, beta=0.5, fmaxes=(0.1, 0.05), n_starts=args.n_starts, seed=args.seed, min_distance=1.5
    )
    write_results(rows, args.out, title=f"B2-trained agent on B2 supercells, β = 0.5 Å, seeds {args.seed}–")
    print(format_table(summarize(rows)))


if __name__ == "__main__":
    main()

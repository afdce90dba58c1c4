"""Pick the B2 specialist among many trained models on held-out starts, then report it on other starts.

TD3 learns B2 in some seeds and not in others, and a run's evaluation on its 20 fixed training-time starts is a
noisy pick. This script evaluates every candidate model (checkpoints of several seeds, see ``train_b2.py
--checkpoint-every``) on *validation* starts (default seeds 200–249, used for nothing else) and ranks them by the
target's statistic: the median force calls to ε (a failed run counts as infinitely many), then the mean, then the
success rate. The winner can be installed as the package's ``"b2"`` agent; the report then runs on the main job's
starts (seeds 0–19) and on fresh starts (seeds 100–149) with ``sb3-crystal benchmark``.

    python pipelines/train_b2.py --variant curriculum_action_noise --steps 10000 --seed 3 \\
        --out results/b2_seeds --checkpoint-every 1000                  # seeds 3, 4, ... (one process each)
    python pipelines/select_b2.py results/b2_seeds --out results/b2_selection [--install]
    python pipelines/select_b2.py b2 --trace       # fmax move by move on seeds 100–149 (the shipped "b2" agent)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.benchmark.agents import AgentRelaxer
from sb3_crystal.benchmark.harness import run_benchmark
from sb3_crystal.structures import StructureDataset

FMAX = 0.05


def candidates(folders: list[Path]) -> list[Path]:
    """Every model zip under ``folders`` (checkpoints, best models and final models), sorted by path."""
    found: set[Path] = set()
    for folder in folders:
        if folder.is_file() and folder.suffix == ".zip":
            found.add(folder)
        elif folder.is_dir():
            found.update(p for p in folder.rglob("*.zip") if "replay_buffer" not in p.name)
        else:
            raise FileNotFoundError(f"{folder}: neither a model zip nor a folder")
    return sorted(found)


def score(calls: list[float]) -> tuple[float, float, float]:
    """(median, mean over converged runs, success rate): a failed run counts as ``inf`` in the median."""
    values = np.array(calls, dtype=np.float64)
    converged = values[np.isfinite(values)]
    mean = float(converged.mean()) if len(converged) else math.inf
    return float(np.median(values)), mean, len(converged) / len(values)


def evaluate(model_path: Path, n_starts: int, seed: int, max_steps: int) -> dict[str, Any]:
    """Force calls of one model alone on the validation starts of B2 AlFe (β 0.5 Å, the benchmark's protocol)."""
    relaxer = AgentRelaxer(CrystalTD3.load(model_path), name=str(model_path))
    rows = run_benchmark(
        StructureDataset("AlFe-B2").minima,
        [relaxer],
        beta=0.5,
        fmaxes=(FMAX,),
        n_starts=n_starts,
        seed=seed,
        max_steps=max_steps,
        min_distance=1.5,
        polish_fmax=None,
        progress=False,
    )
    calls = [float(r["force_calls"]) if r["converged"] else math.inf for r in rows]
    median, mean, success = score(calls)
    return {"model": str(model_path), "median": median, "mean": mean, "success_rate": success}


def trace(agent: Any, n_starts: int = 50, seed: int = 100, moves: int = 3) -> np.ndarray:
    """fmax (eV/Å) at the start and after each of ``moves`` deterministic moves of ``agent``, one row per start of
    B2 AlFe (β 0.5 Å, the benchmark's starts); prints the median per move and, by the start's fmax, how many starts
    reach 0.05 eV/Å within two moves (3 force calls)."""
    from sb3_crystal.benchmark.harness import make_starts
    from sb3_crystal.calculators import make_calculator
    from sb3_crystal.relax import RLOptimizer

    calc = make_calculator("lammps")
    minimum = StructureDataset("AlFe-B2").minima[0]
    table = []
    for start in make_starts(minimum, 0.5, n_starts, seed, min_distance=1.5):
        atoms = start.copy()
        atoms.calc = calc
        optimizer = RLOptimizer(atoms, agent, logfile=None)
        row = [float(np.linalg.norm(atoms.get_forces(), axis=1).max())]
        for _ in range(moves):
            optimizer.step()
            row.append(float(np.linalg.norm(atoms.get_forces(), axis=1).max()))
        table.append(row)
    fmax = np.array(table)
    print("median fmax at the start and after each move:", np.round(np.median(fmax, axis=0), 3).tolist())
    two_moves = fmax[:, :3].min(axis=1) <= FMAX
    for low, high in ((0, 6), (6, 12), (12, np.inf)):
        chosen = (fmax[:, 0] >= low) & (fmax[:, 0] < high)
        print(f"start fmax in [{low}, {high}) eV/Å: {chosen.sum()} starts, {two_moves[chosen].sum()} within two moves")
    return fmax


def install(model_path: Path, selection: dict[str, Any]) -> None:
    """Ship ``model_path`` as the ``"b2"`` agent, recording how it was chosen."""
    from sb3_crystal.relax.agent_io import SHIPPED_AGENTS, save_agent

    folder = SHIPPED_AGENTS["b2"]
    save_agent(CrystalTD3.load(model_path), folder)
    (folder / "training.json").write_text(json.dumps(selection, indent=1))
    print(f"installed {model_path} in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="model zips or folders searched for them")
    parser.add_argument("--n-starts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=200, help="validation starts: seeds seed … seed+n_starts−1")
    parser.add_argument("--max-steps", type=int, default=30, help="agent step cap per validation run")
    parser.add_argument("--out", type=Path, default=Path("results/b2_selection"))
    parser.add_argument("--install", action="store_true", help="ship the winner as the 'b2' agent")
    parser.add_argument("--trace", action="store_true", help="only trace fmax move by move (models: zips or 'b2')")
    args = parser.parse_args()
    if args.trace:
        from sb3_crystal.relax import load_shipped_agent

        for model in args.models:
            print(model)
            trace(load_shipped_agent("b2") if str(model) == "b2" else CrystalTD3.load(model))
        return

    paths = candidates(args.models)
    if not paths:
        raise SystemExit(f"no model zips under {[str(m) for m in args.models]}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, path in enumerate(paths, 1):
        result = evaluate(path, args.n_starts, args.seed, args.max_steps)
        results.append(result)
        print(
            f"[{k}/{len(paths)}] {path}: median {result['median']}, mean {result['mean']:.2f}, "
            f"success {result['success_rate']:.2f}",
            flush=True,
        )
    results.sort(key=lambda r: (r["median"], r["mean"], -r["success_rate"]))
    with open(args.out / "validation.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    best = results[0]
    print(f"best on seeds {args.seed}–{args.seed + args.n_starts - 1}: {best}")
    if args.install:
        selection = {
            "command": "python pipelines/select_b2.py "
            + " ".join(str(m) for m in args.models)
            + f" --n-starts {args.n_starts} --seed {args.seed} --max-steps {args.max_steps} --install",
            "selected": best["model"],
            "validation": {k: best[k] for k in ("median", "mean", "success_rate")},
            "validation_starts": f"seeds {args.seed}-{args.seed + args.n_starts - 1}, beta 0.5, fmax {FMAX}",
            "candidates": len(results),
        }
        install(Path(best["model"]), selection)


if __name__ == "__main__":
    main()

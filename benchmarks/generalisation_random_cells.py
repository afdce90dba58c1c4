"""Issue 6 §4, paper Fig. 6 and Table 1: an agent trained on random 2–3-atom Al–Fe cells relaxes 4- and 5-atom cells.

    python benchmarks/generalisation_random_cells.py                   # trains (10,000 steps, seed 0), then benchmarks
    python benchmarks/generalisation_random_cells.py --model agent.zip --out results/random_cells_agent

Without ``--model`` it trains TD3 + CrystalTFNPolicy with the recipe of ``pipelines/train_default_agent.py``
(see ``benchmarks/generalisation_elemental.py``: Gaussian action noise σ 0.1, hybrid reward (1, 0, 0.5),
force-adaptive action scale, ε 0.05 eV/Å, β 0.5 Å; saddle points pushed into true minima) on the 20 random Al–Fe
cells of 2–3 atoms of ``CrystalRelaxRandomAlFe-v0`` (``random:count=20,atoms=2-3,seed=0``, n_max 5 so that the test
cells fit the same model). Every ``--eval-freq`` steps the agent relaxes one fixed start of every training cell;
the best evaluation on the training cells picks the model (the 4- and 5-atom cells are only logged). Default
``--steps`` 10,000: 790 s on the project's loaded 2-core machine.

Then random cells the agent never saw, from the package's generator (``random:count=10,atoms=4,seed=1`` and
``random:count=10,atoms=5,seed=2``, saddle points escaped into true minima where the escape succeeds),
``--n-starts`` seeded starts per cell (β 0.5 Å, no pair closer than 1.5 Å), go through the agent, the hybrid (agent
to 0.1 eV/Å, then BFGS) and BFGS / BFGSLineSearch / FIRE / GPMin at ε 0.2, 0.1 and 0.05 eV/Å, at most
``--max-steps`` (300) steps per run. ``<out>/summary.md`` pools the starts of all cells of one size;
``<out>/per_cell/`` has the table per cell.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch as th
from generalisation_elemental import benchmark_agent, experiment_parser, train_agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the shipped agents' training pipelines
from train_default_agent import ENV as DEFAULT_ENV

from sb3_crystal.benchmark.harness import format_table, summarize, write_results
from sb3_crystal.structures import RelaxationError, StructureDataset, load_structures

TRAINING_CELLS = "random:count=20,atoms=2-3,seed=0"
#: Training environment: the default agent's recipe on random 2–3-atom cells, n_max 5 (the largest test cell).
ENV: dict[str, Any] = {**DEFAULT_ENV, "structures": TRAINING_CELLS, "n_max": 5}
#: Test groups: name → random-cell spec.
TEST_CELLS = {
    "random N=4": "random:count={count},atoms=4,seed=1",
    "random N=5": "random:count={count},atoms=5,seed=2",
}


def random_test_cells(count: int = 10) -> dict[str, list]:
    """Group name → the relaxed test cells, each named ``"<group> #<i> <formula>"``.

    A cell that relaxes to a saddle point is pushed into a true minimum; one that stays a saddle after the pushes
    is kept as the saddle (its ``info["minimum"]`` says so, and the harness marks its rows "ref min: no").
    """
    groups = {}
    for group, spec in TEST_CELLS.items():
        cells = []
        for i, raw in enumerate(load_structures(spec.format(count=count))):
            try:
                cell = StructureDataset([raw], saddles="escape").minima[0]
            except RelaxationError:
                cell = StructureDataset([raw], saddles="keep").minima[0]
            cell.info["name"] = f"{group} #{i} {cell.get_chemical_formula()}"
            cells.append(cell)
        groups[group] = cells
    return groups


def pool_rows(rows: list[dict[str, Any]], group_of: dict[str, str]) -> list[dict[str, Any]]:
    """The benchmark rows with each cell's name replaced by its group's, so that :func:`summarize` pools the cells."""
    return [{**row, "structure": group_of[row["structure"]]} for row in rows]


def main() -> None:
    parser = experiment_parser(__doc__, "results/generalisation_random_cells", 10_000, 3, 300, [0.2, 0.1, 0.05])
    parser.add_argument("--cells", type=int, default=10, help="test cells per size (N = 4 and N = 5)")
    args = parser.parse_args()
    th.set_num_threads(1)
    groups = random_test_cells(args.cells)
    model_path = args.model
    if model_path is None:
        validation = {
            "N4": {"structures": TEST_CELLS["random N=4"].format(count=args.cells), "saddles": "keep"},
            "N5": {"structures": TEST_CELLS["random N=5"].format(count=args.cells), "saddles": "keep"},
        }
        command = "python " + " ".join(sys.argv)
        model_path = train_agent(ENV, args.steps, args.seed, args.out / "training", validation, args.eval_freq, 1, command)
    cells = [cell for group in groups.values() for cell in group]
    group_of = {cell.info["name"]: group for group, members in groups.items() for cell in members}
    start = time.time()
    rows = benchmark_agent(model_path, cells, args)
    setting = f"β = 0.5 Å, {args.cells} cells × {args.n_starts} starts (seeds {args.start_seed}–)"
    write_results(rows, args.out / "per_cell", title=f"Agent trained on N = 2–3 random cells, per test cell, {setting}")
    pooled = pool_rows(rows, group_of)
    write_results(pooled, args.out, title=f"Agent trained on N = 2–3 random cells on unseen N = 4, 5 cells, {setting}")
    print(format_table(summarize(pooled)))
    print(f"benchmark: {time.time() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()

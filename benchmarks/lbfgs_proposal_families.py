"""The floor of a residual agent: the zero action (L-BFGS proposal inside the trust region) on validation families.

    python benchmarks/lbfgs_proposal_families.py random_4-8_beta0.3 bcc_solid_solution_16 b2_defect_16

Each start of each named family (:func:`~sb3_crystal.structures.families.test_family`, validation split) is relaxed
by :class:`~sb3_crystal.relax.RLOptimizer` with an agent whose action is always zero, so every step is the
observation's L-BFGS proposal, with the default trust region and stall stop; force calls to 0.05 and 0.01 eV/Å and
success are written to ``--out`` (JSON). Compare with ``benchmarks/unseen_families.py`` on the same starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the shipped agents' training pipelines
from train_history_agent import relax_starts, summary, zero_action_agent

from sb3_crystal.structures.families import FAMILIES, test_family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="+", choices=sorted(FAMILIES))
    parser.add_argument("--out", type=Path, default=Path("docs/data/lbfgs_proposal_families.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = {}
    for name in args.families:
        family = test_family(name, "validation")
        agent = zero_action_agent(family.max_atoms)
        for fmax in (0.05, 0.01):
            rows = relax_starts(agent, family.starts, fmax, 500)
            result = summary(rows)
            result["calls"] = [row["force_calls"] for row in rows]
            result["converged"] = [row["converged"] for row in rows]
            results[f"{name}@{fmax}"] = result
            print(name, fmax, {k: v for k, v in result.items() if k not in ("calls", "converged")}, flush=True)
    args.out.write_text(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()

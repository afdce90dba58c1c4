"""Is the zero action a local optimum of the residual recipe? Relax validation starts with agents that move along
the learned-curvature proposal by a fixed amount, and count force calls.

    python pipelines/scan_proposal_scale.py --out docs/data/curvature_agent_rl/proposal_scale_scan.json

The residual agent of ``train_curvature_agent.py`` takes the proposal p_i (the learned Hessian's quasi-Newton step)
plus a correction of a_i·max_displacement·min(|p_i|, 0.1 Å)/0.1 Å per atom. The simplest correction a policy can
learn is along the proposal itself: a_i = k·p_i/|p_i|, a longer (k > 0) or shorter (k < 0) step, the same k for
every atom and step. This script is that family of policies, one agent per k (:class:`AlongProposal`), through
:class:`~sb3_crystal.relax.RLOptimizer` with its default safeguards, on the validation starts of random Al–Fe cells
and on distorted B2 AlFe. If no k beats k = 0 (the zero action, i.e. :class:`~sb3_crystal.relax.LearnedCurvature`
in the recipe's move settings), RL starting from the zero action has no first-order gain to find along the
direction its actor can express most easily, which is what the TD3 runs show: their actors' outputs stay near zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax.agent_io import CrystalAgent
from sb3_crystal.structures.families import test_family

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_curvature_agent import ENV_KWARGS, b2_starts
from train_history_agent import relax_starts, summary


class AlongProposal:
    """A policy whose action is k times the unit vector of each atom's proposal (zero on padding and where the
    proposal vanishes); takes one observation or a stacked batch, as SB3's ``predict`` does.

    :param k: the action's length along the proposal, in action units (|k| ≤ 1).
    """

    def __init__(self, k: float) -> None:
        self.k = float(k)

    def predict(self, observation: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        proposal = np.asarray(observation["proposal"], dtype=np.float64)
        lengths = np.linalg.norm(proposal, axis=-1, keepdims=True)
        unit = np.divide(proposal, lengths, out=np.zeros_like(proposal), where=lengths > 1e-12)
        action = self.k * unit * np.asarray(observation["mask"])[..., None]
        return action.reshape(*action.shape[:-2], -1).astype(np.float32), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=float, nargs="+", default=[-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--max-displacement", type=float, nargs="+", default=[ENV_KWARGS["max_displacement"], 0.15])
    parser.add_argument("--families", nargs="+", default=["random_4-8_beta0.3", "random_4-8_beta0.5"])
    parser.add_argument("--eval-cells", type=int, default=12, help="cells of each family (2 starts each)")
    parser.add_argument("--b2-starts", type=int, default=20, help="distorted B2 AlFe starts (β 0.5 Å)")
    parser.add_argument("--b2-seed", type=int, default=1000)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    sets = {name: test_family(name, "validation", n_cells=args.eval_cells).starts for name in args.families}
    sets["b2_beta0.5"] = b2_starts(CrystalRelaxEnv(structures="AlFe-B2").dataset[0], args.b2_starts, args.b2_seed)
    n_max = max(16, *(len(s) for starts in sets.values() for s in starts))
    rows = []
    for max_displacement in args.max_displacement:
        settings = dict(ENV_KWARGS, max_displacement=max_displacement)
        layout = ObservationLayout(n_max=n_max, history=settings["history"], proposal=settings["proposal"])
        for k in args.k:
            agent = CrystalAgent(AlongProposal(k), n_max, settings, ("Al", "Fe"), observation=layout.to_dict())
            for name, starts in sets.items():
                row = summary(relax_starts(agent, starts, args.fmax, 300))
                row |= {"max_displacement": max_displacement, "k": k, "set": name}
                rows.append(row)
                print(json.dumps(row), flush=True)
    record = {
        "command": "python pipelines/scan_proposal_scale.py " + " ".join(sys.argv[1:]),
        "settings": ENV_KWARGS,
        "fmax": args.fmax,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({record['minutes']} min)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""A second chemistry: an agent trained on Cu–Au with ASE's EMT, against its own zero action and the classical set.

Usage (after training with ``python train.py --algo td3 --env CrystalRelax-v0 --conf-file zoo_configs/td3_emt.yml``
and ``sb3-crystal convert <run>/CrystalRelax-v0.zip agent_cuau``; see docs/tutorial_emt.md)::

    python benchmarks/emt_cu_au.py --model agent_cuau
    python benchmarks/emt_cu_au.py --model agent_cuau --families cuau_fcc_solid_solution_32 --out results/cuau_fcc

The starts are the Cu–Au validation families of :mod:`sb3_crystal.structures.families` (``cuau_random_4-8_beta0.3``:
EMT minima of random Cu–Au cells, β 0.3 Å; ``cuau_fcc_solid_solution_32``: fcc Cu–Au 2×2×2 cubes, ideal sites
plus a 0.05 Å rattle), drawn from seeds reserved for evaluation. Their cells are first checked with pymatgen's
``StructureMatcher`` (:func:`~sb3_crystal.structures.families.training_matches`) against ``--training-samples``
structures of the training generators (the agent's recorded ``generator`` and ``structures`` specs, drawn with
seeds 0…n−1): matching cells are left out and named in the output.

Every start is relaxed at fixed cell with EMT to ε = 0.05 and 0.01 eV/Å by: the agent alone
(:class:`~sb3_crystal.relax.RLOptimizer`, default safeguards), the hybrid (agent to 0.1 eV/Å, then GPMin or
BFGSLineSearch, ``auto``), the same agent with a zero action (for the residual recipe: the L-BFGS proposal it
corrects, i.e. the untrained agent), and ASE's BFGS, LBFGS, BFGSLineSearch, FIRE, GPMin (families of at most
``--gpmin-max-atoms`` atoms), PreconLBFGS with ``Exp`` and SciPy's CG. Force calls are counted by
:class:`~sb3_crystal.benchmark.classical.ForceCallCounter` (new geometries only, line-search trials included); a
run succeeds when it reaches ε within 500 force calls. Statistics over successful runs.

Writes ``<out>.md``, ``<out>.csv`` (one row per run) and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unseen_families import GPMIN_MAX_STEPS, MAX_CALLS, make_optimizers, plot, summarize

from sb3_crystal.benchmark import ForceCallCounter, Relaxer
from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
from sb3_crystal.calculators import make_calculator
from sb3_crystal.relax import CrystalAgent, load_agent
from sb3_crystal.structures.dataset import load_structures
from sb3_crystal.structures.families import SPLITS, EvaluationFamily, test_family
from sb3_crystal.structures.generators import parse_generator_spec

FAMILY_NAMES = ["cuau_random_4-8_beta0.3", "cuau_fcc_solid_solution_32"]
CLASSICAL = ["BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "PreconLBFGS", "CG"]
FMAXES = (0.05, 0.01)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "data" / "emt_cu_au"


def zero_action_twin(agent: CrystalAgent) -> CrystalAgent:
    """A copy of the agent whose actor's output layer is zero: same observation, moves and species, zero action.

    For the residual recipe that is the L-BFGS proposal uncorrected, i.e. the agent as training started
    (:class:`~sb3_crystal.callbacks.residual_start.ZeroActionStart`); a copy of the TFN policy keeps it a graph
    actor, so it takes any number of atoms as the agent does.
    """
    policy = copy.deepcopy(agent.policy)
    output = policy.actor.tfn.output
    with th.no_grad():
        for parameter in [*output.lin2.parameters(), *output.self_connection.parameters()]:
            parameter.zero_()
    return CrystalAgent(
        policy,
        agent.n_max,
        dict(agent.env_settings),
        agent.species,
        agent.algorithm,
        agent.observation,
        agent.calculator,
    )


def training_structures(agent: CrystalAgent, n_samples: int) -> list:
    """Structures the agent's training could have seen: its dataset and ``n_samples`` draws of its generator."""
    settings = agent.env_settings
    structures = []
    if settings.get("structures"):
        structures += load_structures(settings["structures"])
    if settings.get("generator") and n_samples > 0:
        structures += parse_generator_spec(settings["generator"]).sample_many(n_samples, seed=0)
    return structures


def run_family(family: EvaluationFamily, relaxers: list[Relaxer], gpmin_max_atoms: int) -> list[dict[str, Any]]:
    """One row per (relaxer, start, ε), force calls counted on ASE's EMT."""
    counter = ForceCallCounter(make_calculator("emt"))
    rows = []
    for relaxer in relaxers:
        if relaxer.name == "GPMin" and family.max_atoms > gpmin_max_atoms:
            continue
        t0 = time.perf_counter()
        for start in family.starts:
            max_steps = GPMIN_MAX_STEPS if relaxer.name == "GPMin" else MAX_CALLS
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = relaxer.relax_thresholds(start, counter, FMAXES, max_steps)
            for fmax in FMAXES:
                result = results[fmax]
                rows.append(
                    {
                        "family": family.name,
                        "optimizer": relaxer.name,
                        "fmax": fmax,
                        "cell": start.info["name"],
                        "start_seed": start.info["start_seed"],
                        "n_atoms": len(start),
                        "converged": bool(result.converged),
                        "success": bool(result.converged and result.force_calls <= MAX_CALLS),
                        "force_calls": int(result.force_calls),
                        "final_fmax": float(result.fmax),
                        "final_energy": float(result.energy),
                        "wall_time": float(result.wall_time),
                        "error": result.error,
                    }
                )
        print(f"  {family.name:<28s} {relaxer.name:<30s} {time.perf_counter() - t0:7.1f} s", flush=True)
    return rows


def _number(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(
    summary: list[dict[str, Any]], families: list[EvaluationFamily], command: str, elapsed: float, agent: CrystalAgent
) -> str:
    agents = {"RL (agent)", "RL+auto@0.1 (hybrid)", "zero action"}
    lines = [
        "# Cu–Au on ASE's EMT: the trained agent, its zero action and the classical optimizers",
        "",
        f"Split: **{families[0].split}**. Produced by (from the repository root, {elapsed / 60:.1f} min on a shared "
        f"CPU, {platform.processor() or platform.machine()}):",
        "",
        "```",
        command,
        "```",
        "",
        f"Agent: trained with `{agent.env_settings.get('generator')}` (calculator `{agent.calculator}`, species "
        f"{', '.join(agent.species or ())}). Fixed-cell relaxation with EMT. Force calls: energy+forces evaluations "
        f"at new geometries, the start and line-search trials included. Success: ε reached within {MAX_CALLS} force "
        "calls; median, p10–p90 and mean over successful runs; wall time is the median per successful relaxation. "
        "`zero action`: the same agent's observation and moves with the policy's output replaced by zero, which for "
        "the residual recipe is the L-BFGS proposal alone (the agent before training). GPMin only on families "
        f"of at most 20 atoms, {GPMIN_MAX_STEPS} steps at most.",
        "",
        "## Families",
        "",
        "| family | cells | starts | atoms | description | left out |",
        "|---|--:|--:|--:|---|---|",
    ]
    for family in families:
        sizes = sorted({len(start) for start in family.starts})
        span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        left = "; ".join(family.dropped) if family.dropped else "none"
        lines.append(
            f"| {family.name} | {len(family.cells)} | {len(family.starts)} | {span} | {family.description} | {left} |"
        )
    for fmax in FMAXES:
        lines += [
            "",
            f"## ε = {fmax:g} eV/Å",
            "",
            "| family | relaxer | n | median | p10–p90 | mean | success | wall (ms) | ratio to best classical |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for family in families:
            block = [s for s in summary if s["family"] == family.name and s["fmax"] == fmax]
            classical = [s for s in block if s["optimizer"] not in agents and s["success"] == 1.0]
            best = min((s["median"] for s in classical), default=math.nan)
            for s in block:
                ratio = s["median"] / best if best == best and s["median"] == s["median"] else math.nan
                lines.append(
                    f"| {family.name} | {s['optimizer']} | {s['n']} | {_number(s['median'])} | "
                    f"{_number(s['p10'])}–{_number(s['p90'])} | {_number(s['mean'])} | {s['success']:.0%} | "
                    f"{_number(s['wall_ms'])} | {_number(ratio, 2)} |"
                )
    lines += [
        "",
        "Ratio: median force calls over the smallest median among the classical optimizers that converged on every "
        "start of the family.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="agent folder (sb3-crystal convert makes one of a zip)")
    parser.add_argument("--split", choices=SPLITS, default="validation")
    parser.add_argument("--families", nargs="+", choices=FAMILY_NAMES, default=FAMILY_NAMES)
    parser.add_argument("--optimizers", nargs="+", choices=CLASSICAL, default=CLASSICAL)
    parser.add_argument("--training-samples", type=int, default=300, help="generator draws checked against the cells")
    parser.add_argument("--gpmin-max-atoms", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output path without suffix")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    agent = load_agent(args.model)
    training = training_structures(agent, args.training_samples)
    print(f"{len(training)} training structures to match against", flush=True)
    families = [test_family(name, args.split, training=training) for name in args.families]
    for family in families:
        print(f"{family.name}: {len(family.cells)} cells, {len(family.starts)} starts, left out: {family.dropped}", flush=True)
    relaxers: list[Relaxer] = [
        AgentRelaxer(agent, name="RL (agent)"),
        HybridRelaxer(agent, f_switch=0.1, optimizer="auto", name="RL+auto@0.1 (hybrid)"),
        AgentRelaxer(zero_action_twin(agent), name="zero action"),
        *make_optimizers(args.optimizers, newton=False),
    ]
    rows = [row for family in families for row in run_family(family, relaxers, args.gpmin_max_atoms)]
    summary = summarize(rows)
    elapsed = time.perf_counter() - t0
    command = "python benchmarks/emt_cu_au.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args.out.with_suffix(".md").write_text(markdown(summary, families, command, elapsed, agent))
    plot(summary, families, args.out.with_suffix(".png"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

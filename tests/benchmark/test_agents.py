"""Agents as benchmark relaxers, next to the classical ones."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_crystal.benchmark import ForceCallCounter, run_benchmark
from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
from sb3_crystal.benchmark.harness import make_starts
from sb3_crystal.relax import RLOptimizer
from sb3_crystal.relax.agent_io import CrystalAgent


@pytest.fixture(scope="module")
def minimum(relax_env):
    atoms = relax_env.dataset[0].copy()
    atoms.info = {"name": "B2"}
    return atoms


def test_agents_run_next_to_classical_optimizers(mlp_model, minimum):
    relaxers = [
        "BFGS",
        AgentRelaxer(mlp_model, max_displacement=0.05, min_distance=1.0),
        HybridRelaxer(mlp_model, 0.1, "BFGS"),
    ]
    rows = run_benchmark([minimum], relaxers, beta=0.3, fmaxes=(0.1, 0.02), n_starts=2, max_steps=60, progress=False)
    assert {r["optimizer"] for r in rows} == {"BFGS", "RL", "RL+BFGS@0.1"} and len(rows) == 3 * 2 * 2
    seeds = {name: sorted(r["start_seed"] for r in rows if r["optimizer"] == name) for name in ("BFGS", "RL", "RL+BFGS@0.1")}
    assert seeds["BFGS"] == seeds["RL"] == seeds["RL+BFGS@0.1"]  # the same starts
    assert all(r["converged"] and r["force_calls"] >= 2 for r in rows if r["optimizer"] == "RL+BFGS@0.1")
    assert all(not r["error"] for r in rows)


def test_agent_force_calls_follow_the_counter_rule(mlp_model, minimum):
    """The relaxer's count is the standalone optimizer's count of distinct geometries (the start included)."""
    start = make_starts(minimum, 0.3, 1, seed=3)[0]
    relaxer = AgentRelaxer(mlp_model, max_displacement=0.05, min_distance=1.0)
    result = relaxer.relax(start, ForceCallCounter("lammps"), fmax=1e-6, max_steps=15)
    atoms = start.copy()
    atoms.calc = ForceCallCounter("lammps")
    optimizer = RLOptimizer(atoms, mlp_model, logfile=None, max_displacement=0.05, min_distance=1.0)
    optimizer.run(fmax=1e-6, steps=15)
    assert result.steps == optimizer.nsteps <= 15 and not result.converged  # a stalled agent stops early
    assert result.force_calls == optimizer.force_calls == atoms.calc.force_calls
    np.testing.assert_array_equal(result.atoms.positions, atoms.positions)


def test_hybrid_read_off_equals_separate_runs(mlp_model, minimum):
    start = make_starts(minimum, 0.4, 1, seed=5)[0]
    relaxer = HybridRelaxer(mlp_model, switch_fmax=0.5, finisher="FIRE")
    assert relaxer.fmax_independent
    counter = ForceCallCounter("lammps")
    together = relaxer.relax_thresholds(start, counter, [0.1, 0.01], max_steps=300)
    for fmax in (0.1, 0.01):
        alone = relaxer.relax(start, counter, fmax, max_steps=300)
        assert alone.converged and together[fmax].converged
        assert (alone.force_calls, alone.steps) == (together[fmax].force_calls, together[fmax].steps)


@pytest.mark.parametrize("optimizer", ["BFGS", "BFGSLineSearch"])
def test_hybrid_handing_over_at_once_matches_the_classical_optimizer(mlp_model, minimum, optimizer):
    hybrid_relaxer = HybridRelaxer(mlp_model, switch_fmax=1e3, finisher=optimizer, name="H")
    rows = run_benchmark([minimum], [optimizer, hybrid_relaxer], beta=0.3, fmaxes=(0.05,), n_starts=3, progress=False)
    classical = [(r["force_calls"], r["steps"], r["final_energy"]) for r in rows if r["optimizer"] == optimizer]
    hybrid = [(r["force_calls"], r["steps"], r["final_energy"]) for r in rows if r["optimizer"] == "H"]
    assert classical == hybrid


def test_hybrid_default_name_and_read_off(mlp_model):
    """BFGSLineSearch is read off once for every ε; GPMin's path depends on ε, and so may the default "auto"."""
    assert HybridRelaxer(mlp_model, finisher="BFGSLineSearch").fmax_independent
    default = HybridRelaxer(mlp_model)
    assert default.name == "RL+auto@0.1" and not default.fmax_independent
    assert not HybridRelaxer(mlp_model, finisher="GPMin").fmax_independent
    with pytest.warns(DeprecationWarning) as caught:
        old = HybridRelaxer(mlp_model, f_switch=0.2, optimizer="GPMin")
    assert sorted(str(w.message) for w in caught) == [
        "HybridRelaxer: f_switch= is deprecated, use switch_fmax=",
        "HybridRelaxer: optimizer= is deprecated, use finisher=",
    ]
    assert old.name == "RL+GPMin@0.2" and old.kwargs["switch_fmax"] == 0.2 and old.kwargs["finisher"].__name__ == "GPMin"


def test_species_errors_are_not_swallowed(mlp_model, minimum):
    agent = CrystalAgent(mlp_model.policy, n_max=2, species=("Al",))
    with pytest.raises(ValueError, match="Fe not seen in training"):
        AgentRelaxer(agent).relax(make_starts(minimum, 0.2, 1)[0], "lammps", 0.05, 10)

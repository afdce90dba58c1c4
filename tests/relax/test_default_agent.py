"""The Al–Fe agent shipped in the package: it loads without pickled code and relaxes B2 AlFe."""

import numpy as np
import pytest
from ase.build import bulk

from sb3_crystal.calculators import make_calculator
from sb3_crystal.relax import RLOptimizer
from sb3_crystal.relax.agent_io import DEFAULT_AGENT_DIR, SHIPPED_AGENTS, load_default_agent, load_shipped_agent
from sb3_crystal.structures import build_prototype, distort

pytestmark = pytest.mark.skipif(not (DEFAULT_AGENT_DIR / "settings.json").is_file(), reason="no agent installed")


def test_shipped_agent_is_weights_and_plain_data():
    agent = load_default_agent()
    assert agent.species == ("Al", "Fe") and agent.n_max == 8
    assert {p.name for p in DEFAULT_AGENT_DIR.iterdir()} <= {"settings.json", "weights.pt", "training.json", "MODEL_CARD.md"}


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_shipped_agent_relaxes_distorted_b2_in_few_force_calls(seed):
    atoms = distort(build_prototype("AlFe-B2"), 0.5, np.random.default_rng(seed), min_distance=1.5)
    atoms.calc = make_calculator()
    optimizer = RLOptimizer(atoms, logfile=None)
    assert optimizer.run(fmax=0.05, steps=30)
    assert optimizer.force_calls <= 8  # BFGS needs a median of 7 on such starts


def test_shipped_agent_refuses_other_species():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = make_calculator("emt")
    with pytest.raises(ValueError, match="Cu"):
        RLOptimizer(atoms, logfile=None)


B2_AGENT_DIR = SHIPPED_AGENTS["b2"]


@pytest.mark.skipif(not (B2_AGENT_DIR / "settings.json").is_file(), reason="no B2 agent installed")
def test_shipped_b2_specialist_relaxes_b2_in_half_the_classical_force_calls():
    agent = load_shipped_agent("b2")
    assert agent.species == ("Al", "Fe")
    assert {p.name for p in B2_AGENT_DIR.iterdir()} <= {"settings.json", "weights.pt", "training.json", "MODEL_CARD.md"}
    calls = []
    for seed in range(100, 110):
        atoms = distort(build_prototype("AlFe-B2"), 0.5, np.random.default_rng(seed), min_distance=1.5)
        atoms.calc = make_calculator()
        optimizer = RLOptimizer(atoms, model=agent, logfile=None)
        assert optimizer.run(fmax=0.05, steps=30), f"start seed {seed} did not converge"
        calls.append(optimizer.force_calls)
    # the best classical optimizer needs a median of 6-7 force calls on such starts (docs/results.md)
    assert np.median(calls) <= 3 and max(calls) <= 5, calls


CURVATURE_AGENT_DIR = SHIPPED_AGENTS["curvature"]


@pytest.mark.skipif(not (CURVATURE_AGENT_DIR / "settings.json").is_file(), reason="no curvature agent installed")
def test_shipped_curvature_agent_beats_its_zero_action_on_b2_and_relaxes_a_generated_cell():
    from sb3_crystal.relax import LearnedCurvature
    from sb3_crystal.structures.generators import RandomCellGenerator

    agent = load_shipped_agent("curvature")
    assert agent.species == ("Al", "Fe")
    assert agent.layout.proposal == "curvature" and agent.env_settings["action_mode"] == "residual"
    assert {p.name for p in CURVATURE_AGENT_DIR.iterdir()} <= {"settings.json", "weights.pt", "training.json", "MODEL_CARD.md"}
    calls, zero = [], []
    for seed in range(100, 110):
        for model, counts in ((agent, calls), (None, zero)):
            atoms = distort(build_prototype("AlFe-B2"), 0.5, np.random.default_rng(seed), min_distance=1.5)
            atoms.calc = make_calculator()
            if model is None:
                optimizer = LearnedCurvature(atoms, logfile=None)
            else:
                optimizer = RLOptimizer(atoms, model=model, logfile=None)
            assert optimizer.run(fmax=0.05, steps=40), f"start seed {seed} did not converge"
            counts.append(optimizer.force_calls)
    # the cloned correction takes B2 to its minimum in fewer calls than the learned curvature's step alone
    assert np.mean(calls) < np.mean(zero) and np.median(calls) <= 3.5, (calls, zero)
    cell = RandomCellGenerator(atoms=(6, 6)).sample(np.random.default_rng(12_345))
    cell.calc = make_calculator()
    optimizer = RLOptimizer(cell, model=agent, logfile=None)
    assert optimizer.run(fmax=0.05, steps=100)

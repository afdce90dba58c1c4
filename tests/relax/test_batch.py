"""relax_many relaxes many structures in lockstep exactly as RLOptimizer / HybridOptimizer relax each alone."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import LammpsEAMCalculator, UnsupportedElementsError
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.relax import HybridOptimizer, RLOptimizer, load_shipped_agent
from sb3_crystal.relax.agent_io import NoDefaultAgentError
from sb3_crystal.relax.batch import BatchProfile, batched_actions, relax_many, relax_structure
from sb3_crystal.structures.geometry import distort
from tests.helpers import TINY_TFN

HISTORY_ENV = dict(history=2, proposal="lbfgs", action_mode="residual", max_displacement=0.1, epsilon=0.05, max_steps=20)
FMAX, STEPS = 0.05, 12


@pytest.fixture(scope="module")
def paper_model():
    env = CrystalRelaxEnv(max_steps=10)
    yield CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=TINY_TFN, seed=0)
    env.close()


@pytest.fixture(scope="module")
def history_model():
    env = CrystalRelaxEnv(**HISTORY_ENV)
    yield CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=TINY_TFN, seed=1)
    env.close()


@pytest.fixture(scope="module")
def minimum():
    env = CrystalRelaxEnv(max_steps=10)
    atoms = env.dataset[0].copy()  # relaxed B2 AlFe, 2 atoms
    env.close()
    atoms.info.clear()
    return atoms


def random_cell(n_atoms: int, seed: int, volume_per_atom: float = 16.0, min_distance: float = 2.0) -> Atoms:
    """A random Al–Fe cell: atoms placed one by one uniformly in a slightly sheared box, each at least
    ``min_distance`` from the others (periodic images included)."""
    rng = np.random.default_rng(seed)
    side = (n_atoms * volume_per_atom) ** (1 / 3)
    cell = np.eye(3) * side + rng.uniform(-0.1, 0.1, (3, 3)) * side
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float) @ cell
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        trial = rng.random(3) @ cell
        if all(np.linalg.norm(trial - p - images, axis=1).min() > min_distance for p in positions):
            positions.append(trial)
    return Atoms(numbers=rng.choice([13, 26], n_atoms), positions=positions, cell=cell, pbc=True)


@pytest.fixture(scope="module")
def cells(minimum) -> list[Atoms]:
    return starts(minimum)


def starts(minimum: Atoms) -> list[Atoms]:
    """Distorted B2 cells of 2 atoms (the tiny agents' n_max) and 4 (beyond it), and random cells of 3 atoms."""
    cells = [distort(minimum, 0.3, np.random.default_rng(k), min_distance=1.6) for k in range(3)]
    cells.append(distort(minimum.repeat((2, 1, 1)), 0.25, np.random.default_rng(7), min_distance=1.6))
    cells += [random_cell(3, seed) for seed in (1, 2)]
    for atoms in cells:
        atoms.info.clear()
    return cells


def alone(structure: Atoms, model, hybrid: bool = False, **kwargs):
    atoms = structure.copy()
    atoms.calc = LammpsEAMCalculator()
    cls = HybridOptimizer if hybrid else RLOptimizer
    optimizer = cls(atoms, model, logfile=None, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stall warning
        converged = optimizer.run(fmax=FMAX, steps=STEPS)
    return atoms, optimizer, converged


def assert_same_as_alone(results, structures, model, hybrid: bool = False, **kwargs):
    assert [r.index for r in results] == list(range(len(structures)))
    for structure, result in zip(structures, results, strict=True):
        atoms, optimizer, converged = alone(structure, model, hybrid, **kwargs)
        where = f"structure {result.index} ({structure.get_chemical_formula()})"
        assert result.error is None, where
        assert result.force_calls == optimizer.force_calls, where
        assert result.steps == optimizer.nsteps, where
        assert result.converged == converged, where
        # float32 rounding of the batched network differs from a batch of one: after 12 uphill steps of an untrained
        # history agent the positions differed by up to 2e-6 Å.
        np.testing.assert_allclose(result.structure.positions, atoms.positions, atol=5e-6, err_msg=where)
        assert result.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        if hybrid:
            assert result.handover == optimizer.handover_reason, where
        else:
            assert result.stop_reason == ("converged" if converged else optimizer.stop_reason or "max_steps"), where


@pytest.mark.parametrize("which", ["paper", "history"])
def test_lockstep_gives_the_force_calls_and_positions_of_relaxing_each_alone(which, paper_model, history_model, cells):
    model = paper_model if which == "paper" else history_model
    structures = cells
    profile = BatchProfile()
    # Untrained agents: short moves without the trust region, so every step goes somewhere new.
    settings = dict(trust_region=False, max_displacement=0.02)
    results = relax_many(structures, model, fmax=FMAX, steps=STEPS, calculator="lammps", profile=profile, **settings)
    assert_same_as_alone(results, structures, model, **settings)
    # One pass per lockstep step for the cells that fit n_max, one more for the larger cell while it runs.
    assert profile.policy_passes <= 2 * profile.lockstep_steps
    assert profile.policy_rows == sum(r.steps for r in results)  # one row per agent step, no extra pass per structure
    assert all(r.force_calls > 2 for r in results)


def test_the_trust_region_and_stall_rule_act_per_structure(history_model, cells):
    structures = cells
    settings = dict(max_displacement=0.02, trust_region={"max_energy_rise": 0.0, "max_fmax_growth": 1.5}, patience=3)
    results = relax_many(structures, history_model, fmax=FMAX, steps=STEPS, **settings)
    assert_same_as_alone(results, structures, history_model, **settings)
    assert any(r.stop_reason == "stalled" for r in results)
    assert len({r.force_calls for r in results}) > 1  # the paths differ: each structure its own trust region


def test_a_small_batch_size_gives_the_same_results(paper_model, cells):
    structures = cells
    everything = relax_many(structures, paper_model, fmax=FMAX, steps=STEPS, max_displacement=0.02)
    two_at_a_time = relax_many(structures, paper_model, fmax=FMAX, steps=STEPS, max_displacement=0.02, batch_size=2)
    for a, b in zip(everything, two_at_a_time, strict=True):
        assert a.force_calls == b.force_calls
        np.testing.assert_allclose(a.structure.positions, b.structure.positions, atol=1e-6)


def test_hybrid_lockstep_is_the_hybrid_optimizer_alone(history_model, cells):
    structures = cells[2:]
    settings = dict(switch_fmax=0.3, patience=2, max_displacement=0.02)
    results = relax_many(structures, history_model, fmax=FMAX, steps=STEPS, hybrid=settings)
    assert_same_as_alone(results, structures, history_model, hybrid=True, **settings)
    assert any(r.handover is not None for r in results)


def test_inputs_stay_untouched_and_results_hold_energy_and_forces(paper_model, cells):
    structures = cells[:2]
    before = [s.positions.copy() for s in structures]
    results = relax_many(structures, paper_model, fmax=FMAX, steps=3)
    for structure, positions, result in zip(structures, before, results, strict=True):
        np.testing.assert_array_equal(structure.positions, positions)
        assert structure.calc is None
        forces = result.structure.get_forces()
        assert result.fmax == pytest.approx(float(np.sqrt((forces**2).sum(axis=1)).max()))
        assert result.structure.get_potential_energy() == result.energy
        assert result.wall_time > 0


def test_a_bad_structure_is_named_before_any_work_or_recorded(paper_model, cells, minimum):
    structures = cells[:2]
    copper = minimum.copy()
    copper.numbers[:] = 29
    with pytest.raises(UnsupportedElementsError, match=r"structure 1 \(Cu2\).*Cu"):
        relax_many([structures[0], copper, structures[1]], paper_model, steps=3)
    results = relax_many([structures[0], copper, structures[1]], paper_model, steps=3, on_error="record")
    assert [r.stop_reason == "error" for r in results] == [False, True, False]
    assert "Cu" in results[1].error and results[1].structure is None
    assert results[0].force_calls == relax_many([structures[0]], paper_model, steps=3)[0].force_calls


def test_an_error_during_a_relaxation_stops_only_that_structure(paper_model, cells):
    class Failing(LammpsEAMCalculator):
        def compute(self, *args, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls > 2:
                raise RuntimeError("the calculator broke")
            return super().compute(*args, **kwargs)

    structures = cells[:2]
    broken = structures[1].copy()
    broken.calc = Failing()
    fine = structures[0].copy()
    fine.calc = LammpsEAMCalculator()
    results = relax_many([fine, broken], paper_model, fmax=FMAX, steps=STEPS, on_error="record")
    assert results[1].stop_reason == "error" and "the calculator broke" in results[1].error
    assert results[1].force_calls == 2
    assert results[0].error is None and results[0].steps > 0
    with pytest.raises(RuntimeError, match="the calculator broke"):
        broken.calc = Failing()
        relax_many([fine, broken], paper_model, fmax=FMAX, steps=STEPS)


def test_batched_actions_are_the_lone_optimizers_actions(history_model, cells):
    structures = cells
    observations, expected = [], []
    for structure in structures:
        atoms = structure.copy()
        atoms.calc = LammpsEAMCalculator()
        optimizer = RLOptimizer(atoms, history_model, logfile=None)
        observations.append(optimizer.observation())
        expected.append(optimizer.action(observations[-1]))
    for mine, theirs in zip(batched_actions(optimizer.agent, observations), expected, strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_pymatgen_structures_in_and_out(paper_model, cells):
    pytest.importorskip("pymatgen")
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = cells[0]
    structure = AseAtomsAdaptor.get_structure(atoms)
    relaxed = relax_structure(structure, paper_model, fmax=FMAX, steps=STEPS)
    assert type(relaxed).__name__ == "Structure"
    reference = relax_many([atoms], paper_model, fmax=FMAX, steps=STEPS)[0]
    np.testing.assert_allclose(relaxed.cart_coords, reference.structure.positions, atol=1e-6)
    np.testing.assert_allclose(relaxed.lattice.matrix, atoms.cell.array, atol=1e-9)
    assert relaxed.properties["force_calls"] == reference.force_calls
    assert relaxed.properties["converged"] == reference.converged
    np.testing.assert_allclose(relaxed.site_properties["forces"], reference.structure.get_forces(), atol=1e-9)
    # Mixed inputs: each result in the type of its input.
    mixed = relax_many([structure, atoms], paper_model, fmax=FMAX, steps=STEPS)
    assert type(mixed[0].structure).__name__ == "Structure" and isinstance(mixed[1].structure, Atoms)


def test_the_shipped_agent_in_lockstep_is_the_shipped_agent_alone(minimum, cells):
    try:
        agent = load_shipped_agent("alfe")
    except NoDefaultAgentError:
        pytest.skip("the shipped agent is not installed")
    structures = [*cells[:4], random_cell(8, 3), distort(minimum.repeat((2, 2, 2)), 0.2, np.random.default_rng(3))]
    for atoms in structures:
        atoms.info.clear()
    results = relax_many(structures, agent, fmax=FMAX, steps=STEPS)
    assert_same_as_alone(results, structures, agent)
    assert len(structures[-1]) > agent.n_max  # the second batch (beyond n_max) is exercised too

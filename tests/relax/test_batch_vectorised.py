"""The vectorised pieces of relax_many's lockstep agree with the per-structure code they replace, bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import LammpsEAMCalculator
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.envs.moves import MoveRule
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.relax import RLOptimizer
from sb3_crystal.relax.batch import (
    HistoryBatch,
    batched_accepts,
    batched_shifts,
    relax_many,
    stack_observations,
    surely_clear,
)
from sb3_crystal.structures.geometry import distort, has_pair_closer_than
from tests.helpers import TINY_TFN

LAYOUTS = [
    ObservationLayout(n_max=4),
    ObservationLayout(n_max=4, history=3),
    ObservationLayout(n_max=4, history=2, proposal="lbfgs", proposal_memory=3),
    ObservationLayout(n_max=4, history=1, proposal="lbfgs", proposal_memory=5, proposal_max_step=0.05),
    ObservationLayout(n_max=4, proposal="lbfgs", proposal_memory=2),
]
SIZES = (2, 3, 4, 1)  # atoms per structure: padding of different atom counts


def random_paths(rng: np.random.Generator, layout: ObservationLayout):
    """Per structure: a start and a list of later points (0 to memory + 3 steps, so some histories overflow)."""
    paths = []
    for n in SIZES:
        x = rng.normal(size=(n, 3)) * 2.0
        f = rng.normal(size=(n, 3))
        points = [(x, f, float(rng.normal()))]
        for _ in range(int(rng.integers(0, layout.memory + 4))):
            x = x + rng.normal(size=(n, 3)) * 0.1
            f = f * 0.8 + rng.normal(size=(n, 3)) * 0.05
            points.append((x, f, float(points[-1][2] - abs(rng.normal()) * 0.01)))
        paths.append(points)
    return paths


def padded(values: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((width, 3))
    out[: len(values)] = values
    return out


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"h{layout.history}-{layout.proposal}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stacked_observations_are_the_layouts_own_observations(layout, seed):
    rng = np.random.default_rng(seed)
    paths = random_paths(rng, layout)
    width = max(SIZES) + 1  # a row wider than every structure
    batch = HistoryBatch(len(paths), width, layout.memory)
    histories = []
    for row, points in enumerate(paths):
        history = layout.new_history()
        (x, f, e), *later = points
        history.reset(x, f, e)
        batch.reset(np.array([row]), padded(x, width)[None], padded(f, width)[None], np.array([e]))
        for x, f, e in later:
            history.record(x, f, e)
            batch.record(np.array([row]), padded(x, width)[None], padded(f, width)[None], np.array([e]))
        histories.append(history)
    rows = np.arange(len(paths))
    n_atoms = np.array(SIZES)
    numbers = [rng.choice([13, 26], n) for n in SIZES]
    cells = rng.normal(size=(len(paths), 3, 3)) + 4 * np.eye(3)
    species = np.zeros((len(paths), width), np.float32)
    positions, forces = np.zeros((len(paths), width, 3)), np.zeros((len(paths), width, 3))
    proposals = np.zeros((len(paths), width, 3))
    for row, history in enumerate(histories):
        n = SIZES[row]
        species[row, :n] = numbers[row]
        positions[row], forces[row] = padded(history.current[0], width), padded(history.current[1], width)
        if layout.proposal != "none":
            proposal = batch.lbfgs_step(row, n, layout.proposal_memory, layout.proposal_max_step)
            np.testing.assert_array_equal(proposal, history.lbfgs_step(layout.proposal_memory, layout.proposal_max_step))
            proposals[row, :n] = proposal
    for slots in (layout.n_max, layout.n_max + 3):  # the agent's slots, and a padded larger batch
        stacked = stack_observations(layout, slots, species, n_atoms, cells, positions, forces, batch, rows, proposals)
        assert set(stacked) == set(layout.keys)
        for row, history in enumerate(histories):
            alone = layout.build(numbers[row], cells[row], history, n_slots=slots)
            for key, value in alone.items():
                assert stacked[key].dtype == value.dtype == np.float32
                np.testing.assert_array_equal(stacked[key][row], value, err_msg=f"{key}, structure {row}")


def test_stacking_refuses_a_structure_larger_than_the_slots():
    layout = ObservationLayout(n_max=2)
    with pytest.raises(ValueError, match="3 atoms do not fit"):
        stack_observations(
            layout, 2, np.ones((1, 3), np.float32), np.array([3]), np.eye(3)[None], np.zeros((1, 3, 3)), np.zeros((1, 3, 3))
        )


@pytest.mark.parametrize("scale", ["fixed", "force", "proposal"])
@pytest.mark.parametrize("mode", ["absolute", "residual"])
def test_batched_shifts_are_the_move_rules_shifts(scale, mode):
    rng = np.random.default_rng(3)
    rule = MoveRule(max_displacement=0.3, action_scale=scale, force_cap=0.7, action_mode=mode)
    width = 5
    n_atoms = np.array([2, 5, 1, 3])
    actions = rng.normal(size=(4, width, 3)) * 1.5  # some beyond ±1: clipped
    forces, proposals = np.zeros((4, width, 3)), np.zeros((4, width, 3))
    for g, n in enumerate(n_atoms):
        forces[g, :n] = rng.normal(size=(n, 3))
        proposals[g, :n] = rng.normal(size=(n, 3)) * 0.1
    actions[2, 1:] = np.nan  # padding slots are ignored, whatever they hold
    given = mode == "residual" or scale == "proposal"
    shifts = batched_shifts(rule, actions, forces, n_atoms, proposals if given else None)
    for g, n in enumerate(n_atoms):
        expected = rule.shifts(actions[g].ravel(), forces[g, :n], width, proposals[g, :n] if given else None)
        np.testing.assert_array_equal(shifts[g, :n], expected)
        assert not shifts[g, n:].any()


def test_batched_shifts_name_the_structure_and_atom_of_a_bad_action():
    rule = MoveRule()
    actions = np.zeros((2, 3, 3))
    actions[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"structure 1: action holds NaN or inf for atom 2"):
        batched_shifts(rule, actions, np.ones((2, 3, 3)), np.array([3, 3]))


def random_cell(rng: np.random.Generator) -> np.ndarray:
    """Cells from cubic to strongly sheared, some thinner than the contact distance in one direction."""
    cell = np.diag(rng.uniform(1.2, 5.0, 3)) + rng.uniform(-2.0, 2.0, (3, 3)) * rng.uniform(0, 1)
    return cell if abs(np.linalg.det(cell)) > 0.5 else np.eye(3) * 3.0


def test_the_vectorised_contact_test_never_clears_a_close_pair():
    rng = np.random.default_rng(4)
    distance = 1.5
    width = 4
    cleared = close = 0
    for _ in range(40):
        count = 25
        n_atoms = rng.integers(1, width + 1, count)
        cells = np.array([random_cell(rng) for _ in range(count)])
        positions = np.zeros((count, width, 3))
        for g, n in enumerate(n_atoms):
            positions[g, :n] = rng.uniform(-1.0, 2.0, (n, 3)) @ cells[g]  # outside the cell too
        verdict = surely_clear(positions, n_atoms, cells, distance)
        for g, n in enumerate(n_atoms):
            truth = has_pair_closer_than(positions[g, :n], cells[g], distance)
            assert not (verdict[g] and truth), f"cleared a pair closer than {distance} Å (cell {cells[g].tolist()})"
            cleared += bool(verdict[g])
            close += truth
    assert cleared > 100 and close > 100  # both kinds were drawn, and the test clears most that are clear


def test_the_contact_test_sees_a_pair_across_the_cell_boundary():
    cell = np.eye(3) * 4.0
    positions = np.array([[[0.1, 0.1, 0.1], [3.9, 0.1, 0.1]]])  # 0.2 Å apart through the boundary
    assert not surely_clear(positions, np.array([2]), cell[None], 1.5)[0]
    positions = np.array([[[0.1, 0.1, 0.1], [2.1, 0.1, 0.1]]])  # 2 Å apart both ways
    assert surely_clear(positions, np.array([2]), cell[None], 1.5)[0]
    assert not surely_clear(positions[:, :1], np.array([1]), (np.eye(3) * 1.4)[None], 1.5)[0]  # its own image


def test_batched_accepts_is_the_trust_regions_test():
    rng = np.random.default_rng(5)
    region = TrustRegion(max_energy_rise=2e-3, max_fmax_growth=1.7)
    values = [0.0, 1e-13, 0.01, 0.5, -0.3, np.nan, np.inf, -np.inf]
    count = 4000
    energy, fmax = rng.normal(size=count), np.abs(rng.normal(size=count))
    new_energy = energy + rng.normal(size=count) * 0.01
    new_fmax = fmax * rng.uniform(0, 2.5, count)
    picks = rng.integers(0, len(values), (4, 300))
    energy[:300], fmax[300:600] = np.take(values, picks[0]), np.abs(np.take(values, picks[1]))
    new_energy[600:900], new_fmax[900:1200] = np.take(values, picks[2]), np.abs(np.take(values, picks[3]))
    n_atoms = rng.integers(1, 9, count)
    mine = batched_accepts(region, energy, fmax, new_energy, new_fmax, n_atoms)
    theirs = [
        region.accepts(*map(float, args[:4]), int(args[4]))
        for args in zip(energy, fmax, new_energy, new_fmax, n_atoms, strict=True)
    ]
    assert mine.tolist() == theirs
    assert 0 < mine.sum() < count


@pytest.fixture(scope="module")
def agent_model():
    env = CrystalRelaxEnv(max_steps=10)
    model = CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=TINY_TFN, seed=2)
    minimum = env.dataset[0].copy()
    env.close()
    minimum.info.clear()
    return model, minimum


def test_contact_limited_moves_are_those_of_relaxing_alone(agent_model, monkeypatch):
    """Long moves with a contact distance close to the B2 bond: the contact rule cuts moves short, in lockstep
    through the vectorised test and the rule's bisection, alone through the rule alone."""
    model, minimum = agent_model
    starts = [distort(minimum, 0.15, np.random.default_rng(k)) for k in range(3)]
    starts.append(distort(minimum.repeat((2, 1, 1)), 0.15, np.random.default_rng(9)))
    settings = dict(max_displacement=0.4, min_distance=2.3, trust_region=False, patience=None)
    fractions = []
    contact_fraction = MoveRule.contact_fraction

    def spy(self, *args, **kwargs):
        fractions.append(contact_fraction(self, *args, **kwargs))
        return fractions[-1]

    monkeypatch.setattr(MoveRule, "contact_fraction", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = relax_many(starts, model, fmax=0.05, steps=6, calculator="lammps", **settings)
        for start, result in zip(starts, results, strict=True):
            atoms = start.copy()
            atoms.calc = LammpsEAMCalculator()
            optimizer = RLOptimizer(atoms, model, logfile=None, **settings)
            optimizer.run(fmax=0.05, steps=6)
            assert result.force_calls == optimizer.force_calls
            assert result.steps == optimizer.nsteps
            np.testing.assert_allclose(result.structure.positions, atoms.positions, atol=5e-6)
    assert any(f < 1.0 for f in fractions)  # the contact rule did cut moves


def test_a_start_closer_than_the_contact_distance_is_warned_about(agent_model):
    model, minimum = agent_model
    close = Atoms("AlFe", positions=[[0, 0, 0], [1.3, 0, 0]], cell=np.eye(3) * 5.0, pbc=True)
    with pytest.warns(UserWarning, match=r"Atoms 0 and 1 are 1\.300 Å apart, closer than the agent's min_distance"):
        relax_many([minimum, close], model, fmax=0.05, steps=1, calculator="lammps", min_distance=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        relax_many([minimum], model, fmax=0.05, steps=1, calculator="lammps", min_distance=1.5)


def test_the_lockstep_keeps_to_the_lammps_calculators_instance_cache(agent_model, monkeypatch):
    """More cells than the shared calculator keeps LAMMPS instances for: the structures of a new cell wait until
    the calculator has room, rather than make it evict and rebuild instances at every step; the results stay those
    of relaxing each alone."""
    model, minimum = agent_model
    starts = [distort(minimum, 0.2, np.random.default_rng(k)) for k in range(2)]  # cell A twice
    for k, factor in enumerate((1.01, 1.02, 0.99)):  # cells B, C, D: the same atoms, strained
        strained = starts[k % 2].copy()
        strained.set_cell(strained.cell * factor, scale_atoms=True)
        starts.append(strained)
    cells_called = []
    compute = LammpsEAMCalculator.compute

    def spy(self, numbers, cell, positions, stress=False):
        cells_called.append(round(float(np.asarray(cell)[0, 0]), 6))
        return compute(self, numbers, cell, positions, stress)

    monkeypatch.setattr(LammpsEAMCalculator, "compute", spy)
    calc = LammpsEAMCalculator(max_instances=2)
    settings = dict(max_displacement=0.02, trust_region=False)
    results = relax_many(starts, model, fmax=0.05, steps=6, calculator=calc, **settings)
    a, b, c, d = (round(float(s.cell[0, 0]), 6) for s in starts[1:])
    assert len({a, b, c, d}) == 4
    first_of_later = min(cells_called.index(c), cells_called.index(d))
    assert set(cells_called[:first_of_later]) == {a, b}  # two cells at a time: A and B first ...
    assert set(cells_called[first_of_later:]) == {c, d}  # ... then C and D, once A and B were done
    for start, result in zip(starts, results, strict=True):
        atoms = start.copy()
        atoms.calc = LammpsEAMCalculator()
        optimizer = RLOptimizer(atoms, model, logfile=None, **settings)
        optimizer.run(fmax=0.05, steps=6)
        assert result.force_calls == optimizer.force_calls and result.steps == optimizer.nsteps == 6
        np.testing.assert_allclose(result.structure.positions, atoms.positions, atol=5e-6)


def test_bad_settings_are_refused_as_the_optimizer_refuses_them(agent_model):
    model, minimum = agent_model
    with pytest.raises(ValueError, match="patience must be a positive integer"):
        relax_many([minimum], model, steps=2, patience=0)
    results = relax_many([minimum, minimum], model, steps=2, patience=0, on_error="record")
    assert all(r.stop_reason == "error" and "patience" in r.error for r in results)
    with pytest.raises(ValueError, match="steps must be a positive integer"):  # raised, as RLOptimizer.run raises
        relax_many([minimum], model, steps=0, on_error="record")

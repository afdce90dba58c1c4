"""The learned curvature's cell block: the Hessian over atoms and a homogeneous deformation, its form in
FrechetCellFilter's coordinates, the joint step of atoms and cell, and LearnedCurvature through the filter."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.filters import FrechetCellFilter
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from sb3_crystal import LearnedCurvature
from sb3_crystal.calculators import ForceCallCounter, make_calculator
from sb3_crystal.curvature import PairCurvatureModel, cell_curvature_step, frechet_hessian, load_cell_model, load_model
from sb3_crystal.curvature.fit import design_tensor, exact_strain_hessian, parameters, set_parameters
from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.structures.families import test_family
from sb3_crystal.structures.generators import SolidSolutionGenerator
from sb3_crystal.structures.geometry import distort
from tests.helpers import record_observations


def _random_model(seed: int = 0, embedding: bool = True) -> PairCurvatureModel:
    """A model with random coefficients: the symmetries hold for any coefficients."""
    extra = {"embedding_centers": np.linspace(2.2, 5.5, 4), "embedding_width": 0.7} if embedding else {}
    model = PairCurvatureModel(("Al", "Fe"), 6.0, np.linspace(2.0, 5.8, 6), 0.6, **extra)
    return set_parameters(model, np.random.default_rng(seed).normal(size=model.n_parameters))


def _structure(seed: int = 1, rattle: float = 0.1, lattice: str = "bcc", size: int = 1):
    return SolidSolutionGenerator(lattice, size=size, rattle=rattle, al=(0.2, 0.6)).sample(np.random.default_rng(seed))


@pytest.fixture(scope="module")
def lammps():
    return make_calculator("lammps")


def _strained(atoms, seed: int, volume: float = 0.04, shear: float = 0.03):
    """``atoms`` under a random volume change and symmetric shear (atoms following), rattled by 0.03 Å."""
    rng = np.random.default_rng(seed)
    off = rng.uniform(-shear, shear, 3)
    deformation = np.eye(3) + np.array([[0, off[2], off[1]], [off[2], 0, off[0]], [off[1], off[0], 0]])
    deformation *= ((1 + rng.uniform(-volume, volume)) / np.linalg.det(deformation)) ** (1 / 3)
    out = atoms.copy()
    out.calc = None
    out.set_cell(np.array(atoms.cell) @ deformation, scale_atoms=True)
    return distort(out, 0.03, rng, min_distance=1.5)


def _exact(atoms, lammps):
    from sb3_crystal.calculators import matscipy_eam
    from sb3_crystal.curvature.fit import exact_hessian

    return exact_strain_hessian(exact_hessian(matscipy_eam(), atoms), lammps, atoms)


# -- the strain Hessian ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", [False, True])
def test_strain_hessian_extends_the_atom_hessian(embedding: bool) -> None:
    """Its atom block is the fixed-cell Hessian bit for bit; it is symmetric, translations are zero modes of every
    block, and it is linear in the coefficients exactly as the fit's design tensor says."""
    atoms = _structure(size=1, rattle=0.15)
    model = _random_model(embedding=embedding)
    n = len(atoms)
    h = model.strain_hessian(atoms.numbers, atoms.cell.array, atoms.positions)
    assert h.shape == (3 * n + 9, 3 * n + 9)
    assert np.array_equal(h[: 3 * n, : 3 * n], model.hessian(atoms.numbers, atoms.cell.array, atoms.positions))
    np.testing.assert_allclose(h, h.T, atol=1e-12 * np.abs(h).max())
    assert np.abs(h[3 * n :, 3 * n :]).max() > 1.0 and np.abs(h[: 3 * n, 3 * n :]).max() > 1e-3
    for axis in range(3):
        translation = np.zeros(3 * n + 9)
        translation[axis : 3 * n : 3] = 1.0
        assert np.abs(h @ translation).max() < 1e-10 * np.abs(h).max()
    design = design_tensor(model, atoms, strain=True)
    np.testing.assert_allclose(design @ parameters(model), h.ravel(), atol=1e-10 * np.abs(h).max())


def test_strain_hessian_is_the_quadratic_form_of_the_bond_changes() -> None:
    """The pair term's energy ¼ Σ_directed dᵀ C d with d = u_j − u_i + ε r_ij, evaluated pair by pair."""
    atoms = _structure(seed=6, size=1, rattle=0.1)
    model = _random_model(embedding=False)
    n = len(atoms)
    rng = np.random.default_rng(2)
    u, strain = rng.normal(size=(n, 3)), rng.normal(size=(3, 3)) * 0.2
    i, j, vectors, kinds = model.pairs(atoms.numbers, atoms.cell.array, atoms.positions)
    r = np.linalg.norm(vectors, axis=1)
    energy = 0.0
    for p in range(len(i)):
        a, b = model.stiffness(np.array([r[p]]), int(kinds[p]))
        unit = vectors[p] / r[p]
        c = (a[0] - b[0]) * np.outer(unit, unit) + b[0] * np.eye(3)
        d = u[j[p]] - u[i[p]] + strain @ vectors[p]
        energy += 0.25 * d @ c @ d
    q = np.concatenate([u.ravel(), strain.ravel()])
    h = model.strain_hessian(atoms.numbers, atoms.cell.array, atoms.positions)
    assert 0.5 * q @ h @ q == pytest.approx(energy, rel=1e-10)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_strain_hessian_rotates_with_the_crystal(seed: int) -> None:
    atoms = _structure(seed=seed % 97, size=1, rattle=0.15)
    model = _random_model()
    rotation = Rotation.random(random_state=seed).as_matrix()
    n = len(atoms)
    h = model.strain_hessian(atoms.numbers, atoms.cell.array, atoms.positions)
    turned = model.strain_hessian(atoms.numbers, atoms.cell.array @ rotation.T, atoms.positions @ rotation.T)
    big = np.zeros((3 * n + 9, 3 * n + 9))
    big[: 3 * n, : 3 * n] = np.kron(np.eye(n), rotation)
    big[3 * n :, 3 * n :] = np.kron(rotation, rotation)  # ε → R ε Rᵀ
    np.testing.assert_allclose(turned, big @ h @ big.T, atol=1e-9 * np.abs(h).max())


def _cells():
    """Three held-out cells under strain: the 2-atom B2 cell, a bcc Fe–Al 16-atom cell (seed outside the fitting
    seeds) and the first validation random cell (never fitted: checked by the fit's StructureMatcher step)."""
    b2 = SolidSolutionGenerator("b2", size=1, rattle=0.0).ideal(np.random.default_rng(0))
    bcc = _structure(seed=90_002, rattle=0.05, lattice="bcc", size=2)
    random_cell = test_family("random_4-8_beta0.3", "validation", n_cells=1).cells[0]
    return [("b2_2", _strained(b2, 1)), ("bcc_16", _strained(bcc, 2)), ("random", _strained(random_cell, 3))]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_shipped_cell_model_matches_the_exact_elastic_response(index: int, lammps) -> None:
    """The strain block of the shipped cell model against the exact EAM one (central differences of the LAMMPS
    stress under strain), within the fit's held-out quality (docs/cell.md); the atoms-only model's strain block,
    which no strain data constrained, is much further off."""
    _, atoms = _cells()[index]
    n = len(atoms)
    exact = _exact(atoms, lammps)[3 * n :, 3 * n :]

    def error(model) -> float:
        mine = model.strain_hessian(atoms.numbers, atoms.cell.array, atoms.positions)[3 * n :, 3 * n :]
        return float(np.linalg.norm(mine - exact) / np.linalg.norm(exact))

    assert error(load_cell_model()) < 0.15
    assert error(load_model()) > 2 * error(load_cell_model())


# -- FrechetCellFilter's coordinates -----------------------------------------------------------------------------
def test_frechet_hessian_is_the_filters_hessian(lammps) -> None:
    """The exact (u, ε) Hessian written in the filter's coordinates equals central differences of the filter's own
    generalised forces, at a deformed filter state (D ≠ I) away from the minimum: ASE's scaling of positions and
    cell forces, and the second-order terms of its map."""
    _, atoms = _cells()[0]
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    x = filt.get_positions()
    x[-3:] += 0.03 * len(atoms) * np.array([[1.0, 0.3, 0.0], [0.3, -0.5, 0.1], [0.0, 0.1, 0.4]])
    x[:-3] += np.random.default_rng(0).normal(scale=0.05, size=x[:-3].shape)
    filt.set_positions(x)
    x, forces = filt.get_positions(), filt.get_forces()
    size = x.size
    numeric = np.zeros((size, size))
    for k in range(size):
        step = np.zeros(size)
        step[k] = 1e-4
        filt.set_positions(x + step.reshape(x.shape))
        plus = filt.get_forces().ravel()
        filt.set_positions(x - step.reshape(x.shape))
        numeric[:, k] = -(plus - filt.get_forces().ravel()) / 2e-4
    filt.set_positions(x)
    exact = frechet_hessian(_exact(atoms, lammps), filt.deform_grad(), forces, filt.exp_cell_factor)
    np.testing.assert_allclose(exact, 0.5 * (numeric + numeric.T), atol=2e-3 * np.abs(numeric).max())
    linear_only = frechet_hessian(_exact(atoms, lammps), filt.deform_grad(), forces, filt.exp_cell_factor, False)
    assert np.abs(linear_only - numeric).max() > 10 * np.abs(exact - numeric).max()  # the map's curvature counts


#: A deformation of the filter's cell rows away from its start (a deformed filter state, D ≠ I), per atom.
OFFSET = np.array([[0.5, 0.2, 0.0], [0.2, -0.3, 0.1], [0.0, 0.1, 0.2]])


def _filter_state(atoms, lammps, offset: np.ndarray = OFFSET):
    atoms = atoms.copy()
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    x = filt.get_positions()
    x[-3:] += 0.02 * len(atoms) * offset
    filt.set_positions(x)
    return atoms, filt


def test_cell_step_rotates_with_the_crystal(lammps) -> None:
    """Rotating the crystal (and so the filter's original cell and its deformation) rotates the atoms' step and
    turns the cell rows as R X Rᵀ; with a secant pair too."""
    _, start = _cells()[2]
    rotation = Rotation.random(random_state=3).as_matrix()
    turned = start.copy()
    turned.set_cell(start.cell.array @ rotation.T, scale_atoms=False)
    turned.positions = start.positions @ rotation.T
    n = len(start)
    s = np.random.default_rng(1).normal(scale=0.01, size=(n + 3, 3))
    s_turned = np.vstack([s[:n] @ rotation.T, rotation @ s[n:] @ rotation.T])
    steps = []
    for atoms, offset, pair in ((start, OFFSET, s), (turned, rotation @ OFFSET @ rotation.T, s_turned)):
        atoms, filt = _filter_state(atoms, lammps, offset)
        x, f = filt.get_positions(), filt.get_forces()
        args = (atoms.numbers, atoms.cell.array, x, f, filt.deform_grad(), filt.exp_cell_factor)
        steps.append(cell_curvature_step(*args, history_pairs=[(pair, 2.0 * pair)], max_step=0.3))
    mine, theirs = steps
    assert np.abs(mine).max() > 1e-3
    np.testing.assert_allclose(theirs[:n], mine[:n] @ rotation.T, atol=1e-7)
    np.testing.assert_allclose(theirs[n:], rotation @ mine[n:] @ rotation.T, atol=1e-7)


def test_cell_step_is_a_capped_descent_direction(lammps) -> None:
    _, start = _cells()[1]
    atoms, filt = _filter_state(start, lammps)
    x, f = filt.get_positions(), filt.get_forces()
    step = cell_curvature_step(atoms.numbers, atoms.cell.array, x, f, filt.deform_grad(), filt.exp_cell_factor, max_step=0.05)
    n = len(atoms)
    rows = np.vstack([step[:n] @ np.linalg.inv(filt.deform_grad()).T, step[n:]])  # back to the filter's frame
    assert float(np.sum(rows * f)) > 0
    longest = max(np.linalg.norm(step[:n], axis=1).max(), np.linalg.norm(step[n:], 2))
    assert longest == pytest.approx(0.05)
    assert np.linalg.norm(step, axis=1).max() <= 0.05 + 1e-12  # so every row of the filter moves at most that
    assert np.abs(step[:n].mean(axis=0)).max() < 1e-12  # no rigid translation


def test_cell_step_bad_inputs(lammps) -> None:
    _, start = _cells()[0]
    atoms, filt = _filter_state(start, lammps)
    x, f = filt.get_positions(), filt.get_forces()
    args = (atoms.numbers, atoms.cell.array)
    with pytest.raises(ValueError, match="n_atoms \\+ 3"):
        cell_curvature_step(*args, x[:-1], f[:-1], filt.deform_grad(), 2.0)
    with pytest.raises(ValueError, match="cell_factor"):
        cell_curvature_step(*args, x, f, filt.deform_grad(), 0.0)
    with pytest.raises(ValueError, match="deformation"):
        cell_curvature_step(*args, x, f, -np.eye(3), 2.0)
    with pytest.raises(ValueError, match="max_step"):
        cell_curvature_step(*args, x, f, filt.deform_grad(), 2.0, max_step=0.0)
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell_curvature_step(*args, x, bad, filt.deform_grad(), 2.0)
    with pytest.raises(ValueError, match="frame"):
        ObservationLayout(n_max=2, proposal="curvature", cell=True).proposal_step(
            ObservationLayout(n_max=2).new_history(), atoms.numbers, atoms.cell.array
        )


# -- LearnedCurvature through the filter ------------------------------------------------------------------------
@pytest.mark.parametrize("index", [0, 2])
def test_learned_curvature_relaxes_strained_cells_to_zero_stress(index: int, lammps) -> None:
    """A strained B2 cell and a strained random cell relax through FrechetCellFilter to zero stress (every row of
    the filter's forces ≤ 0.01), each try of the trust region counted, in fewer force calls than the old atoms-only
    step needed on such starts."""
    _, start = _cells()[index]
    atoms = start.copy()
    atoms.calc = ForceCallCounter(lammps)
    filt = FrechetCellFilter(atoms)
    optimizer = LearnedCurvature(filt, logfile=None)
    assert optimizer.layout.cell  # the joint step, not L-BFGS on the cell rows
    assert optimizer.run(fmax=0.01, steps=100)
    assert np.linalg.norm(filt.get_forces(), axis=1).max() <= 0.01
    assert np.abs(atoms.get_stress()).max() < 0.01 * len(atoms) / atoms.get_volume()  # cell rows are V σ / N
    assert optimizer.force_calls == atoms.calc.force_calls
    assert optimizer.force_calls <= 20


def test_env_zero_action_is_learned_curvature_through_the_filter(lammps) -> None:
    """CrystalRelaxEnv(cell=True, proposal="curvature", residual) at a zero action observes exactly what
    LearnedCurvature(FrechetCellFilter(atoms)) observes, step by step."""
    settings = dict(
        cell=True,
        proposal="curvature",
        action_mode="residual",
        trust_region=True,
        max_displacement=0.05,
        action_scale="fixed",
        min_distance=1.0,
        epsilon=1e-4,
        beta=0.2,
        max_steps=20,
    )
    env = CrystalRelaxEnv(**settings)
    obs, _ = env.reset(seed=2)
    atoms = env.atoms
    atoms.calc = lammps
    optimizer = LearnedCurvature(FrechetCellFilter(atoms), logfile=None)
    seen = record_observations(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.run(fmax=1e-4, steps=4)
    assert len(seen) >= 2
    for observation in seen:
        assert np.abs(observation["cell_proposal"]).max() > 0
        for key in obs:
            np.testing.assert_allclose(observation[key][: len(atoms)], obs[key][: len(atoms)], atol=1e-6, err_msg=key)
        obs, _, terminated, _, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        if terminated:
            break
    env.close()


@pytest.mark.parametrize("option", [{"hydrostatic_strain": True}, {"scalar_pressure": 0.001}, {"mask": [1, 1, 1, 0, 0, 0]}])
def test_filter_options_fall_back_to_the_split_step(option, lammps) -> None:
    """A FrechetCellFilter whose forces are not the plain energy's gradient (projected, masked, under pressure)
    gets the fixed-cell step for the atoms and L-BFGS for the cell, and still relaxes."""
    _, start = _cells()[0]
    atoms = start.copy()
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms, **option)
    optimizer = LearnedCurvature(filt, logfile=None)
    assert not optimizer.layout.cell
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert optimizer.run(fmax=0.05, steps=200)

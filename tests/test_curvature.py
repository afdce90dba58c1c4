"""The learned-curvature model and its quasi-Newton step: symmetry by construction, fit quality, files, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from sb3_crystal.curvature import PairCurvatureModel, curvature_step, load_model, secant_pairs, wants_secant_pairs
from sb3_crystal.curvature.fit import NormalEquations, design_tensor, parameters, set_parameters
from sb3_crystal.structures.generators import SolidSolutionGenerator


def _random_model(seed: int = 0, embedding: bool = True) -> PairCurvatureModel:
    """A model with random coefficients: symmetry holds for any coefficients, fitted or not."""
    extra = {"embedding_centers": np.linspace(2.2, 5.5, 4), "embedding_width": 0.7} if embedding else {}
    model = PairCurvatureModel(("Al", "Fe"), 6.0, np.linspace(2.0, 5.8, 6), 0.6, **extra)
    return set_parameters(model, np.random.default_rng(seed).normal(size=model.n_parameters))


def _structure(seed: int = 1, rattle: float = 0.1, lattice: str = "bcc", size: int = 1) -> Atoms:
    kwargs = {"al": (0.2, 0.6)} if lattice != "b2" else {"antisites": 1}
    return SolidSolutionGenerator(lattice, size=size, rattle=rattle, **kwargs).sample(np.random.default_rng(seed))


def _hessian(model: PairCurvatureModel, atoms: Atoms) -> np.ndarray:
    return model.hessian(atoms.numbers, atoms.cell.array, atoms.positions)


@pytest.mark.parametrize("embedding", [False, True])
def test_sum_rule_and_symmetry(embedding: bool) -> None:
    atoms = _structure(size=2)
    h = _hessian(_random_model(embedding=embedding), atoms)
    n = len(atoms)
    assert np.abs(h).max() > 1.0  # not trivially zero
    for axis in range(3):
        translation = np.zeros((n, 3))
        translation[:, axis] = 1.0
        assert np.abs(h @ translation.ravel()).max() < 1e-10 * np.abs(h).max()
    np.testing.assert_allclose(h, h.T, atol=1e-12 * np.abs(h).max())


def test_small_cell_with_self_images() -> None:
    """A 2-atom cell (every atom sees its own images within the cutoff) still obeys the sum rule."""
    atoms = _structure(seed=3, rattle=0.05, lattice="b2", size=1)
    h = _hessian(_random_model(), atoms)
    assert np.abs(h.reshape(len(atoms), 3, len(atoms), 3).sum(axis=2)).max() < 1e-10 * np.abs(h).max()


def test_rotation_equivariance() -> None:
    atoms = _structure(size=2)
    model = _random_model()
    rotation = Rotation.random(random_state=4).as_matrix()
    h = _hessian(model, atoms)
    rotated = model.hessian(atoms.numbers, atoms.cell.array @ rotation.T, atoms.positions @ rotation.T)
    big = np.kron(np.eye(len(atoms)), rotation)
    np.testing.assert_allclose(rotated, big @ h @ big.T, atol=1e-9 * np.abs(h).max())


def test_translation_and_permutation_equivariance() -> None:
    atoms = _structure(size=2)
    model = _random_model()
    h = _hessian(model, atoms)
    shifted = model.hessian(atoms.numbers, atoms.cell.array, atoms.positions + np.array([0.3, -1.1, 2.7]))
    np.testing.assert_allclose(shifted, h, atol=1e-9 * np.abs(h).max())
    order = np.random.default_rng(5).permutation(len(atoms))
    permuted = model.hessian(atoms.numbers[order], atoms.cell.array, atoms.positions[order])
    blocks = h.reshape(len(atoms), 3, len(atoms), 3)[order][:, :, order]
    np.testing.assert_allclose(permuted, blocks.reshape(h.shape), atol=1e-9 * np.abs(h).max())


def test_design_tensor_and_fit_recover_a_model() -> None:
    """The fit is linear least squares on the design tensor: it recovers the coefficients of a model's own Hessians."""
    truth = _random_model(seed=7)
    structures = [_structure(seed=s, rattle=0.2, size=2) for s in (10, 11, 12)]
    for atoms in structures[:1]:
        np.testing.assert_allclose(design_tensor(truth, atoms) @ parameters(truth), _hessian(truth, atoms).ravel(), atol=1e-9)
    fitted = _random_model(seed=8)
    equations = NormalEquations(fitted)
    for atoms in structures:
        equations.add(atoms, _hessian(truth, atoms))
    set_parameters(fitted, equations.solve(ridge=0.0))
    test = _structure(seed=13, rattle=0.2, size=2)
    np.testing.assert_allclose(_hessian(fitted, test), _hessian(truth, test), atol=1e-6 * np.abs(_hessian(truth, test)).max())


@pytest.mark.parametrize("lattice", ["bcc", "b2"])
def test_shipped_model_agrees_with_exact_eam_hessian(lattice: str) -> None:
    """On a held-out 16-atom cell (seed outside the fitting seeds), rattled 0.05 Å from ideal sites like the
    validation families' starts, the shipped model's Hessian is within 10 % (Frobenius) of matscipy's exact one and
    its Newton step points within 25° of the exact Newton step."""
    from sb3_crystal.calculators import make_calculator, matscipy_eam
    from sb3_crystal.curvature.fit import exact_hessian, hessian_errors

    atoms = _structure(seed=90_001, rattle=0.05, lattice=lattice, size=2)
    exact = exact_hessian(matscipy_eam(), atoms)
    work = atoms.copy()
    work.calc = make_calculator("lammps")
    errors = hessian_errors(load_model(), atoms, exact, work.get_forces())
    assert errors["frobenius"] < 0.10
    assert errors["step_cosine"] > np.cos(np.radians(25))


def test_save_load_round_trip(tmp_path) -> None:
    model = _random_model()
    model.info = {"note": "test"}
    path = model.save(tmp_path / "model.json")
    loaded = load_model(path)
    atoms = _structure(size=2)
    np.testing.assert_array_equal(_hessian(loaded, atoms), _hessian(model, atoms))
    assert loaded.info == {"note": "test"} and loaded.elements == ("Al", "Fe")
    shipped = load_model()
    assert shipped.embedding is not None and shipped.info["n_fit"] > 0


def test_bad_model_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_model(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json.*not JSON"):
        load_model(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"bad\.json.*format"):
        load_model(bad)
    data = _random_model().to_dict()
    del data["centers"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad\.json.*missing entries \['centers'\]"):
        load_model(bad)
    data = _random_model().to_dict()
    data["coefficients"] = [[1.0]]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad\.json.*coefficients must have shape"):
        load_model(bad)


def test_bad_structures_and_parameters() -> None:
    model = _random_model()
    atoms = _structure(size=1)
    with pytest.raises(ValueError, match="atom 1 is Cu"):
        model.hessian([26, 29], atoms.cell.array, atoms.positions[:2])
    with pytest.raises(ValueError, match="positions must be"):
        model.hessian(atoms.numbers, atoms.cell.array, atoms.positions[:1])
    with pytest.raises(ValueError, match="cell is singular"):
        model.hessian(atoms.numbers, np.zeros((3, 3)), atoms.positions)
    with pytest.raises(ValueError, match="not an element symbol"):
        PairCurvatureModel(("Al", "Xx"), 6.0, [2.0], 0.5)
    with pytest.raises(ValueError, match="cutoff"):
        PairCurvatureModel(("Al",), -1.0, [2.0], 0.5)


def _relaxation_state(seed: int = 2) -> tuple[Atoms, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    atoms = _structure(seed=seed, size=2)
    forces = rng.normal(size=(len(atoms), 3))
    forces -= forces.mean(axis=0)
    pairs = []
    for _ in range(3):
        s = 0.05 * rng.normal(size=(len(atoms), 3))
        pairs.append((s, 5.0 * s + 0.1 * rng.normal(size=s.shape)))
    return atoms, forces, pairs


def test_step_is_a_capped_descent_direction_without_translation() -> None:
    atoms, forces, pairs = _relaxation_state()
    model = load_model()
    for history in ([], pairs):
        step = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, history, model, max_step=0.1)
        assert float(np.sum(step * forces)) > 0
        assert np.linalg.norm(step, axis=1).max() <= 0.1 + 1e-12
        np.testing.assert_allclose(step.sum(axis=0), 0.0, atol=1e-10)


def test_step_with_exact_quadratic_is_newton() -> None:
    """With a positive definite Hessian given and no cap in reach, the step solves H·dx = F."""
    atoms, forces, _ = _relaxation_state()
    h = _hessian(load_model(), atoms)
    values = np.linalg.eigvalsh(h)
    if values[3] <= 0.5:  # the shipped fit need not be positive definite; shift it into the regime tested here
        h = h + (0.5 - values[3] + 1.0) * np.eye(len(h))
        translation = np.kron(np.ones((len(atoms), 1)), np.eye(3)) / np.sqrt(len(atoms))
        h = h - (0.5 - values[3] + 1.0) * translation @ translation.T
    step = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, hessian=h, max_step=1e6)
    np.testing.assert_allclose(h @ step.ravel(), forces.ravel(), atol=1e-8)


def test_step_rotates_with_the_structure() -> None:
    atoms, forces, pairs = _relaxation_state()
    model = load_model()
    rotation = Rotation.random(random_state=9).as_matrix()
    step = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, pairs, model)
    rotated = curvature_step(
        atoms.numbers,
        atoms.cell.array @ rotation.T,
        atoms.positions @ rotation.T,
        forces @ rotation.T,
        [(s @ rotation.T, y @ rotation.T) for s, y in pairs],
        model,
    )
    np.testing.assert_allclose(rotated, step @ rotation.T, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e2))
def test_step_descends_for_any_forces_and_history(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    atoms = _structure(seed=4, size=1)
    forces = scale * rng.normal(size=(len(atoms), 3))
    pairs = [(rng.normal(size=(len(atoms), 3)), rng.normal(size=(len(atoms), 3))) for _ in range(4)]
    step = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, pairs, _random_model(seed=seed % 7))
    free = forces - forces.mean(axis=0)
    assert float(np.sum(step * free)) > 0
    assert np.all(np.isfinite(step))


def test_step_bad_inputs() -> None:
    atoms, forces, pairs = _relaxation_state()
    model = load_model()
    args = (atoms.numbers, atoms.cell.array, atoms.positions)
    with pytest.raises(ValueError, match="forces"):
        curvature_step(*args, forces[:-1], model=model)
    bad = forces.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        curvature_step(*args, bad, model=model)
    with pytest.raises(ValueError, match="max_step"):
        curvature_step(*args, forces, model=model, max_step=0.0)
    with pytest.raises(ValueError, match=r"history_pairs\[1\]"):
        curvature_step(*args, forces, [pairs[0], (pairs[1][0][:-1], pairs[1][1])], model)
    with pytest.raises(ValueError, match="hessian must be"):
        curvature_step(*args, forces, hessian=np.eye(6))
    with pytest.raises(ValueError, match="min_curvature"):
        curvature_step(*args, forces, model=model, min_curvature=-1.0)


def test_secant_pairs_and_the_adaptive_rule_read_a_relaxation_history() -> None:
    """The helpers read :class:`RelaxationHistory` steps: pairs oldest first with y = −ΔF; the rule asks for them after
    a step that raised the max force or after a refused try (recorded as the try and the way back), not after progress."""
    from sb3_crystal.envs.observation import RelaxationHistory

    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(4, 3))
    f0 = rng.normal(size=(4, 3))
    history = RelaxationHistory(4)
    history.reset(x0, f0, 0.0)
    assert not wants_secant_pairs(f0, history.steps(2))
    x1, f1 = x0 + 0.1, 0.5 * f0  # progress
    history.record(x1, f1, -1.0)
    assert not wants_secant_pairs(f1, history.steps(2))
    ((s, y),) = secant_pairs(history.steps(2))
    np.testing.assert_allclose(s, x1 - x0)
    np.testing.assert_allclose(y, -(f1 - f0))
    history.record(x1 + 0.2, 0.1 * f0, 5.0)  # a refused try with a smaller max force (refused for its energy) ...
    history.record(x1, f1, -1.0)  # ... and the way back
    assert wants_secant_pairs(f1, history.steps(2))
    pairs = secant_pairs(history.steps(3))
    np.testing.assert_allclose(pairs[-1][0], -0.2 * np.ones((4, 3)))
    history.record(x1 + 0.05, 2.0 * f1, -1.5)  # accepted but the max force went up
    assert wants_secant_pairs(2.0 * f1, history.steps(2))

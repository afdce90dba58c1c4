"""The calculator registry: a calculator registered in a test is a name for make_calculator and the environment."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from sb3_crystal.calculators import CALCULATORS, calculator_names, make_calculator, register_calculator
from sb3_crystal.calculators import registry as registry_module
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.structures.prototypes import build_prototype

#: B2 AlFe's nearest-neighbour distance is about 2.5 Å: σ puts the Lennard-Jones minimum there.
SIGMA = 2.5 / 2 ** (1 / 6)


def lennard_jones(sigma: str = str(SIGMA)) -> LennardJones:
    """A tiny toy calculator: Lennard-Jones with a smooth cutoff, ``"toy_lj:<σ>"`` picks σ (Å)."""
    return LennardJones(sigma=float(sigma), epsilon=0.05, rc=2.5 * float(sigma), smooth=True)


@pytest.fixture
def toy_lj():
    register_calculator("toy_lj", lennard_jones)
    yield "toy_lj"
    CALCULATORS.pop("toy_lj")


def test_builtins_are_registered():
    assert {"lammps", "matscipy", "emt", "chgnet"} <= set(calculator_names())
    assert isinstance(make_calculator("EMT"), EMT)  # any case, as before


def test_a_registered_calculator_is_a_name_for_make_calculator(toy_lj):
    calc = make_calculator("toy_lj")
    assert isinstance(calc, LennardJones) and calc.parameters.sigma == pytest.approx(SIGMA)
    assert make_calculator("Toy_LJ:2.0").parameters.sigma == 2.0  # the text after ":" goes to the factory
    atoms = build_prototype("AlFe-B2")
    atoms.positions[0] += 0.1
    atoms.calc = make_calculator("toy_lj")
    reference = atoms.copy()
    reference.calc = lennard_jones()
    np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())
    assert np.abs(atoms.get_forces()).max() > 1e-3


def test_a_registered_calculator_drives_the_environment(toy_lj):
    env = CrystalRelaxEnv(structures="AlFe-B2", calculator="toy_lj", beta=0.2, epsilon=1e-4, max_steps=3)
    try:
        assert isinstance(env.calculator, LennardJones)
        _, info = env.reset(seed=0)
        atoms = env.atoms
        atoms.calc = lennard_jones()
        fmax = np.sqrt((atoms.get_forces() ** 2).sum(axis=1)).max()
        assert info["fmax"] == pytest.approx(fmax, rel=1e-10) and fmax > 1e-3  # the toy potential's forces
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert info["force_calls"] == 2 and not terminated and not truncated
    finally:
        env.close()


def test_register_as_a_decorator_and_bad_registrations():
    @register_calculator("toy_emt")
    def toy_emt() -> EMT:
        return EMT()

    try:
        assert CALCULATORS["toy_emt"] is toy_emt and isinstance(make_calculator("toy_emt"), EMT)
        register_calculator("TOY_EMT", toy_emt)  # the same factory again: no change
        with pytest.raises(ValueError, match="a calculator named 'toy_emt' exists already"):
            register_calculator("toy_emt", EMT)
    finally:
        CALCULATORS.pop("toy_emt")
    for name in ("", "a:b", "pkg.mod", 3):
        with pytest.raises(ValueError, match="calculator name must be"):
            register_calculator(name, EMT)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        register_calculator("toy_none", object())  # type: ignore[arg-type]
    register_calculator("toy_not_a_calculator", lambda: "EMT")
    try:
        with pytest.raises(TypeError, match="returned str, not an ASE calculator"):
            make_calculator("toy_not_a_calculator")
    finally:
        CALCULATORS.pop("toy_not_a_calculator")
    with pytest.raises(ValueError, match=r"Unknown calculator 'toy_missing': use one of \['chgnet', 'emt'"):
        make_calculator("toy_missing")


def test_a_module_in_the_calculators_folder_registers_itself(tmp_path, monkeypatch):
    """One file is a new built-in: a module of the package's folder is imported when its name is first looked up."""
    import sb3_crystal.calculators as package

    (tmp_path / "toy_folder_calculator.py").write_text(
        "from ase.calculators.emt import EMT\n"
        "from sb3_crystal.calculators.registry import register_calculator\n"
        "register_calculator('toy_folder', EMT)\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(registry_module, "_discovered", False)
    try:
        assert isinstance(make_calculator("toy_folder"), EMT)
    finally:
        CALCULATORS.pop("toy_folder", None)
        monkeypatch.delitem(__import__("sys").modules, "sb3_crystal.calculators.toy_folder_calculator", raising=False)

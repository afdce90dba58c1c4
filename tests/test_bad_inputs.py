"""Bad input to the environment, the relaxers and the agent loader: a specific error naming what is wrong, first.

A table of bad inputs, each with the exception type and a fragment of the message it must raise, and hypothesis
tests drawing bad positions, cells, thresholds and atom counts. The relaxers' cases also check that no force call
was made before the error (errors come before any work).
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sb3_crystal.calculators import UnsupportedElementsError
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.relax import CrystalAgent, HybridOptimizer, RLOptimizer, load_agent, load_model, save_agent
from sb3_crystal.relax.agent_io import AgentFormatError
from sb3_crystal.structures import build_prototype
from tests.helpers import CountingEAM, mlp_td3

NAN, INF = math.nan, math.inf


class StillPolicy:
    """A stand-in policy that never moves (a relaxer's checks do not depend on what the agent does)."""

    def predict(self, observation, deterministic=False):
        return np.zeros(observation["positions"].size, np.float32), None


AGENT = CrystalAgent(StillPolicy(), n_max=2, env_settings={"max_displacement": 0.3, "min_distance": 1.5}, species=("Al", "Fe"))


def b2(**changes: Any) -> Atoms:
    """The B2 AlFe cell (2 atoms, 2.85 Å cubic), with ``positions``/``cell``/``pbc``/``numbers`` replaced."""
    atoms = build_prototype("AlFe-B2")
    atoms.positions = atoms.positions + np.array([[0.02, -0.03, 0.01], [0.0, 0.04, -0.02]])
    for name, value in changes.items():
        setattr(atoms, name, value)
    return atoms


def with_position(atom: int, value: Any, axis: int = 0) -> Atoms:
    atoms = b2()
    positions = atoms.positions.copy()
    positions[atom, axis] = value
    atoms.positions = positions
    return atoms


def with_cell(cell: Any) -> Atoms:
    atoms = b2()
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


def pymatgen_structure():
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(b2())


SINGULAR = [[2.85, 0, 0], [2.85, 0, 0], [0, 0, 2.85]]
FLAT = [[2.85, 0, 0], [0, 2.85, 0], [0, 0, 0]]
CLOSE = [[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]


def close_pair() -> Atoms:
    return b2(positions=np.array(CLOSE))


def copper() -> Atoms:
    return b2(numbers=[29, 26])


def dummy() -> Atoms:
    return b2(numbers=[0, 26])


def empty() -> Atoms:
    return Atoms(cell=np.eye(3) * 2.85, pbc=True)


# -- the table ------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    env: CrystalRelaxEnv
    folder: Path
    calculators: list[CountingEAM]

    def atoms(self, atoms: Any) -> Any:
        """``atoms`` with a counting calculator attached (when it can take one)."""
        if isinstance(atoms, Atoms):
            atoms.calc = CountingEAM()
            self.calculators.append(atoms.calc)
        return atoms

    def rl(self, atoms: Any = None, **kwargs: Any) -> RLOptimizer:
        return RLOptimizer(
            self.atoms(b2() if atoms is None else atoms), model=kwargs.pop("model", AGENT), logfile=None, **kwargs
        )

    def hybrid(self, atoms: Any = None, **kwargs: Any) -> HybridOptimizer:
        return HybridOptimizer(self.atoms(b2() if atoms is None else atoms), model=AGENT, logfile=None, **kwargs)

    def reset(self, atoms: Any) -> Any:
        return self.env.reset(options={"atoms": atoms})


@dataclass
class Case:
    name: str
    run: Callable[[Context], Any]
    error: type[BaseException]
    match: str


def env_case(name: str, error: type[BaseException], match: str, **kwargs: Any) -> Case:
    return Case(f"env-{name}", lambda ctx: CrystalRelaxEnv(max_steps=3, **kwargs), error, match)


def structure_case(name: str, structure: Callable[[], Any], error: type[BaseException], match: str) -> list[Case]:
    """One bad structure given to the environment's constructor and reset, RLOptimizer and HybridOptimizer."""
    return [
        Case(f"env-{name}", lambda ctx: CrystalRelaxEnv(structures=structure(), max_steps=3), error, match),
        Case(f"reset-{name}", lambda ctx: ctx.reset(structure()), error, match),
        Case(f"rl-{name}", lambda ctx: ctx.rl(structure()), error, match),
        Case(f"hybrid-{name}", lambda ctx: ctx.hybrid(structure()), error, match),
    ]


POSITION = r"atom 1 \(Fe\) has a NaN or inf position"
CLOSE_MATCH = r"atoms 0 \(Al\) and 1 \(Fe\) are 0.100 Å apart"

STRUCTURES = [
    *structure_case("singular-cell", lambda: with_cell(SINGULAR), ValueError, r"cell is singular"),
    *structure_case("flat-cell", lambda: with_cell(FLAT), ValueError, r"cell is singular"),
    *structure_case("zero-cell", lambda: with_cell(np.zeros((3, 3))), ValueError, r"cell is singular"),
    *structure_case(
        "nan-cell", lambda: with_cell([[NAN, 0, 0], [0, 2.85, 0], [0, 0, 2.85]]), ValueError, r"cell holds NaN or inf"
    ),
    *structure_case(
        "inf-cell", lambda: with_cell([[INF, 0, 0], [0, 2.85, 0], [0, 0, 2.85]]), ValueError, r"cell holds NaN or inf"
    ),
    *structure_case(
        "long-cell", lambda: with_cell([[1e10, 0, 0], [0, 2.85, 0], [0, 0, 2.85]]), ValueError, r"cell is too large"
    ),
    *structure_case("big-cell", lambda: with_cell(np.eye(3) * 5e3), ValueError, r"cell is too large \(volume"),
    *structure_case(
        "tiny-cell", lambda: with_cell(np.eye(3) * 0.1), ValueError, r"atoms 0 \(Al\) and 1 \(Fe\) are 0.008 Å apart"
    ),
    *structure_case("no-atoms", empty, ValueError, r"has no atoms"),
    *structure_case("nan-position", lambda: with_position(1, NAN), ValueError, POSITION),
    *structure_case("inf-position", lambda: with_position(1, -INF, axis=2), ValueError, POSITION),
    *structure_case("far-position", lambda: with_position(1, 1e300), ValueError, r"atom 1 \(Fe\) lies .* outside the cell"),
    *structure_case("not-periodic", lambda: b2(pbc=False), ValueError, r"fully periodic"),
    *structure_case("slab", lambda: b2(pbc=[True, True, False]), ValueError, r"fully periodic"),
    *structure_case("atoms-0.1-apart", close_pair, ValueError, CLOSE_MATCH),
    *structure_case(
        "same-place", lambda: b2(positions=np.zeros((2, 3))), ValueError, r"atoms 0 \(Al\) and 1 \(Fe\) are 0.000 Å"
    ),
    *structure_case("dummy-atom", dummy, ValueError, r"atom 0 is a dummy atom"),
    *structure_case("copper", copper, UnsupportedElementsError, r"Cu"),
    Case("reset-pymatgen", lambda ctx: ctx.reset(pymatgen_structure()), TypeError, r"AseAtomsAdaptor\.get_atoms"),
    Case("rl-pymatgen", lambda ctx: ctx.rl(pymatgen_structure()), TypeError, r"AseAtomsAdaptor\.get_atoms"),
    Case("hybrid-pymatgen", lambda ctx: ctx.hybrid(pymatgen_structure()), TypeError, r"AseAtomsAdaptor\.get_atoms"),
    Case(
        "env-pymatgen", lambda ctx: CrystalRelaxEnv(structures=pymatgen_structure()), TypeError, r"AseAtomsAdaptor\.get_atoms"
    ),
    Case("reset-dict", lambda ctx: ctx.reset({"numbers": [13, 26]}), TypeError, r"options\['atoms'\] must be an ase.Atoms"),
    Case("rl-array", lambda ctx: ctx.rl(np.zeros((2, 3))), TypeError, r"must be an ase.Atoms, got ndarray"),
    Case("reset-too-many", lambda ctx: ctx.reset(b2().repeat((3, 1, 1))), ValueError, r"6 atoms, more than n_max=4"),
    Case("rl-too-many", lambda ctx: ctx.rl(b2().repeat((2, 1, 1))), ValueError, r"4 atoms, more than the 2 slots"),
    Case(
        "reset-0.4-apart",
        lambda ctx: ctx.reset(b2(positions=np.array([[0, 0, 0], [0.4, 0, 0]]))),
        ValueError,
        r"options\['atoms'\]: atoms 0 \(Al\) and 1 \(Fe\) are 0.400 Å apart",
    ),
    Case("rl-no-calculator", lambda ctx: RLOptimizer(b2(), model=AGENT, logfile=None), ValueError, r"attach a calculator"),
]

ENV = [
    env_case("epsilon-0", ValueError, r"epsilon must be a finite number > 0", epsilon=0.0),
    env_case("epsilon-nan", ValueError, r"epsilon must be a finite number > 0", epsilon=NAN),
    env_case("epsilon-negative", ValueError, r"epsilon must be a finite number > 0", epsilon=-1.0),
    env_case("beta-negative", ValueError, r"beta", beta=-0.1),
    env_case("beta-inf", ValueError, r"beta", beta=INF),
    env_case("max-displacement-0", ValueError, r"max_displacement must be a finite number > 0", max_displacement=0.0),
    env_case("force-cap-nan", ValueError, r"force_cap must be a finite number > 0", force_cap=NAN),
    env_case("action-scale", ValueError, r"action_scale must be one of", action_scale="adaptive"),
    env_case("min-distance-nan", ValueError, r"min_distance", min_distance=NAN),
    env_case("min-distance-above-neighbours", ValueError, r"min_distance=2.6 Å is not below", min_distance=2.6),
    env_case("reward", ValueError, r"reward must be one of", reward="energy"),
    env_case("reward-weights", ValueError, r"reward_weights must be three finite numbers", reward_weights=(1.0, 2.0)),
    env_case("n-max-small", ValueError, r"2 atoms, more than n_max=1", n_max=1),
    env_case("structure-weights", ValueError, r"structure_weights must be 1", structure_weights=[0.5, 0.5]),
    env_case("saddles", ValueError, r"saddles must be one of", saddles="maybe"),
    env_case("residual-without-proposal", ValueError, r"set proposal='lbfgs'", action_mode="residual"),
    env_case("relax-fmax-0", ValueError, r"relax_fmax must be a finite number > 0", relax_fmax=0.0),
    env_case("relax-fmax-nan", ValueError, r"relax_fmax must be a finite number > 0", relax_fmax=NAN),
    env_case("input-min-distance-nan", ValueError, r"input_min_distance must be a finite number ≥ 0", input_min_distance=NAN),
    env_case("unknown-prototype", FileNotFoundError, r"neither a prototype", structures="AlFe-B3"),
    env_case("missing-file", FileNotFoundError, r"no_such\.cif", structures="no_such.cif"),
    env_case("no-structures", ValueError, r"holds no structure", structures=[]),
    env_case("random-spec", ValueError, r"must read 'random:count=", structures="random:count=2"),
    env_case("number", TypeError, r"Cannot read structures from int", structures=42),
    Case("env-max-steps-0", lambda ctx: CrystalRelaxEnv(max_steps=0), ValueError, r"max_steps must be a positive integer"),
    Case(
        "env-max-steps-float", lambda ctx: CrystalRelaxEnv(max_steps=2.5), ValueError, r"max_steps must be a positive integer"
    ),
    Case(
        "reset-index", lambda ctx: ctx.env.reset(options={"structure_index": 3}), IndexError, r"structure_index 3 out of range"
    ),
    Case(
        "step-nan-action",
        lambda ctx: (ctx.env.reset(seed=0), ctx.env.step(np.full(12, NAN, np.float32))),
        ValueError,
        r"NaN or inf for atom 0",
    ),
    Case(
        "step-short-action",
        lambda ctx: (ctx.env.reset(seed=0), ctx.env.step(np.zeros(5, np.float32))),
        ValueError,
        r"12 numbers",
    ),
    Case("set-epsilon-inf", lambda ctx: ctx.env.set_epsilon(INF), ValueError, r"epsilon must be a finite number > 0"),
    Case("set-beta-nan", lambda ctx: ctx.env.set_beta(NAN), ValueError, r"beta"),
]

FMAX = r"fmax must be a finite number > 0 eV/Å"
STEPS = r"steps must be a positive integer"
OPTIMIZERS = [
    Case("rl-run-fmax-0", lambda ctx: ctx.rl().run(fmax=0.0, steps=5), ValueError, FMAX),
    Case("rl-run-fmax-negative", lambda ctx: ctx.rl().run(fmax=-1.0, steps=5), ValueError, FMAX),
    Case("rl-run-fmax-nan", lambda ctx: ctx.rl().run(fmax=NAN, steps=5), ValueError, FMAX),
    Case("rl-run-fmax-inf", lambda ctx: ctx.rl().run(fmax=INF, steps=5), ValueError, FMAX),
    Case("rl-run-fmax-text", lambda ctx: ctx.rl().run(fmax="0.05", steps=5), TypeError, FMAX),
    Case("rl-run-steps-0", lambda ctx: ctx.rl().run(fmax=0.05, steps=0), ValueError, STEPS),
    Case("rl-run-steps-negative", lambda ctx: ctx.rl().run(fmax=0.05, steps=-3), ValueError, STEPS),
    Case("rl-run-steps-float", lambda ctx: ctx.rl().run(fmax=0.05, steps=2.5), ValueError, STEPS),
    Case("rl-run-steps-nan", lambda ctx: ctx.rl().run(fmax=0.05, steps=NAN), ValueError, STEPS),
    Case("rl-irun-fmax-0", lambda ctx: ctx.rl().irun(fmax=0.0, steps=5), ValueError, FMAX),
    Case("rl-irun-steps-0", lambda ctx: ctx.rl().irun(fmax=0.05, steps=0), ValueError, STEPS),
    Case("hybrid-run-fmax-0", lambda ctx: ctx.hybrid().run(fmax=0.0, steps=5), ValueError, FMAX),
    Case("hybrid-run-fmax-negative", lambda ctx: ctx.hybrid().run(fmax=-0.5, steps=5), ValueError, FMAX),
    Case("hybrid-run-fmax-nan", lambda ctx: ctx.hybrid().run(fmax=NAN, steps=5), ValueError, FMAX),
    Case("hybrid-run-steps-0", lambda ctx: ctx.hybrid().run(fmax=0.05, steps=0), ValueError, STEPS),
    Case("hybrid-run-steps-float", lambda ctx: ctx.hybrid().run(fmax=0.05, steps=1.5), ValueError, STEPS),
    Case("hybrid-irun-fmax-nan", lambda ctx: ctx.hybrid().irun(fmax=NAN), ValueError, FMAX),
    Case("rl-patience-0", lambda ctx: ctx.rl(patience=0), ValueError, r"patience must be a positive integer"),
    Case("rl-min-improvement-1", lambda ctx: ctx.rl(min_improvement=1.0), ValueError, r"min_improvement must be in \[0, 1\)"),
    Case("rl-trust-region", lambda ctx: ctx.rl(trust_region="on"), ValueError, r"trust_region must be 'auto'"),
    Case(
        "rl-max-displacement",
        lambda ctx: ctx.rl(max_displacement=-0.1),
        ValueError,
        r"max_displacement must be a finite number > 0",
    ),
    Case("rl-action-scale", lambda ctx: ctx.rl(action_scale="adaptive"), ValueError, r"action_scale must be one of"),
    Case("rl-model-text", lambda ctx: ctx.rl(model="agent.zip"), TypeError, r"Only TD3 and SAC models"),
    Case("hybrid-switch-fmax-0", lambda ctx: ctx.hybrid(switch_fmax=0.0), ValueError, r"switch_fmax must be > 0"),
    Case("hybrid-switch-fmax-nan", lambda ctx: ctx.hybrid(switch_fmax=NAN), ValueError, r"switch_fmax must be > 0"),
    Case("hybrid-finisher", lambda ctx: ctx.hybrid(finisher="Newton"), ValueError, r"Unknown finisher 'Newton'"),
    Case("hybrid-patience-0", lambda ctx: ctx.hybrid(patience=0), ValueError, r"patience must be a positive integer"),
    Case("hybrid-energy-rise", lambda ctx: ctx.hybrid(max_energy_rise=-1.0), ValueError, r"max_energy_rise must be ≥ 0"),
    Case("hybrid-agent-steps", lambda ctx: ctx.hybrid(max_agent_steps=-1), ValueError, r"max_agent_steps must be ≥ 0"),
    Case("hybrid-min-improvement", lambda ctx: ctx.hybrid(min_improvement=1.5), ValueError, r"min_improvement must be in"),
    Case("hybrid-move-setting-typo", lambda ctx: ctx.hybrid(max_displacment=0.2), TypeError, r"max_displacment"),
]


def agent_folder(ctx: Context, name: str, settings: Any = None, weights: bytes | None = None) -> Path:
    """A copy of the saved agent with its settings.json text/data or weights.pt bytes replaced."""
    source, folder = ctx.folder / "agent", ctx.folder / name
    folder.mkdir(exist_ok=True)
    text = (source / "settings.json").read_text()
    if settings is not None:
        text = settings if isinstance(settings, str) else json.dumps(settings(json.loads(text)))
    (folder / "settings.json").write_text(text)
    (folder / "weights.pt").write_bytes((source / "weights.pt").read_bytes() if weights is None else weights)
    return folder


def edited(**changes: Any) -> Callable[[dict], dict]:
    def edit(settings: dict) -> dict:
        for key, value in changes.items():
            if value is None:
                settings.pop(key)
            else:
                settings[key] = value
        return settings

    return edit


def a_file(ctx: Context, name: str) -> Path:
    path = ctx.folder / name
    path.write_text("not an agent\n")
    return path


def a_zip(ctx: Context, name: str, entries: dict[str, str]) -> Path:
    path = ctx.folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for entry, text in entries.items():
            archive.writestr(entry, text)
    return path


def folder_case(name: str, match: str, settings: Any = None, weights: bytes | None = None) -> Case:
    """The saved agent with its settings.json text (or an edit of its data) or weights.pt bytes replaced."""
    return Case(f"load-{name}", lambda ctx: load_model(agent_folder(ctx, name, settings, weights)), AgentFormatError, match)


def file_case(name: str, match: str, make: Callable[[Context], Path], **load: Any) -> Case:
    return Case(f"load-{name}", lambda ctx: load_model(make(ctx), **load), AgentFormatError, match)


def without_weights(ctx: Context) -> Path:
    folder = agent_folder(ctx, "no_weights")
    (folder / "weights.pt").unlink()
    return folder


def binary_settings(ctx: Context) -> Path:
    folder = agent_folder(ctx, "binary")
    (folder / "settings.json").write_bytes(b"\xff\xfe\x00")
    return folder


NOT_JSON, NOT_AGENT, NO_FIT = (
    r"settings.json: not valid JSON",
    r"settings.json: not an sb3_crystal agent",
    r"weights.pt: weights do not fit",
)
LOADERS = [
    Case("load-model-missing", lambda ctx: load_model(ctx.folder / "nothing"), FileNotFoundError, r"No model at .*nothing"),
    Case(
        "load-agent-missing", lambda ctx: load_agent(ctx.folder / "nothing"), AgentFormatError, r"nothing: not an agent folder"
    ),
    file_case("empty-folder", r"empty: not an agent folder \(settings.json missing\)", lambda ctx: ctx.folder / "empty"),
    file_case("no-weights", r"no_weights: not an agent folder \(weights.pt missing\)", without_weights),
    file_case("settings-binary", NOT_JSON, binary_settings),
    folder_case("settings-not-json", NOT_JSON, settings="{not json"),
    folder_case("settings-list", NOT_AGENT, settings="[1, 2]"),
    folder_case("settings-format", NOT_AGENT, settings=edited(format="other")),
    folder_case("settings-newer", r"format version 99 is newer", settings=edited(format_version=99)),
    folder_case("settings-no-algorithm", r"missing entry 'algorithm'", settings=edited(algorithm=None)),
    folder_case("settings-algorithm", r"settings.json: unknown algorithm 'PPO'", settings=edited(algorithm="PPO")),
    folder_case("settings-policy", r"unknown policy class 'EvilPolicy'", settings=edited(policy_class="EvilPolicy")),
    folder_case(
        "settings-class",
        r"'os.system' is not a torch.nn / torch.optim class",
        settings=edited(policy_kwargs={"activation_fn": {"__class__": "os.system"}}),
    ),
    folder_case("settings-n-max", r"settings.json: n_max must be a positive integer", settings=edited(n_max="two")),
    folder_case("weights-garbage", NO_FIT, weights=b"\x00garbage" * 8),
    folder_case("weights-empty", NO_FIT, weights=b""),
    folder_case("weights-text", NO_FIT, weights=b"hello"),
    folder_case("weights-shape", NO_FIT, settings=edited(policy_kwargs={"net_arch": [16]})),
    file_case("text-file", r"agent.txt: neither an SB3 model zip nor an agent folder", lambda ctx: a_file(ctx, "agent.txt")),
    file_case("zip-refused", r"ppo.zip is an SB3 model zip: .*allow_pickle=True", lambda ctx: ctx.folder / "ppo.zip"),
    file_case(
        "plain-zip",
        r"plain.zip: not an SB3 model",
        lambda ctx: a_zip(ctx, "plain.zip", {"readme.txt": "hi"}),
        allow_pickle=True,
    ),
    file_case(
        "zip-bad-data",
        r"bad_data.zip: cannot read",
        lambda ctx: a_zip(ctx, "bad_data.zip", {"data": "{no"}),
        allow_pickle=True,
    ),
    file_case(
        "sb3-ppo-zip",
        r"ppo.zip: a model with policy ActorCriticPolicy, not TD3",
        lambda ctx: ctx.folder / "ppo.zip",
        allow_pickle=True,
    ),
    file_case(
        "sb3-pendulum-zip",
        r"pendulum_td3.zip: cannot load as CrystalTD3 \(TypeError: Not a crystal agent",
        lambda ctx: ctx.folder / "pendulum_td3.zip",
        allow_pickle=True,
    ),
]

CASES = STRUCTURES + ENV + OPTIMIZERS + LOADERS


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    from stable_baselines3 import PPO, TD3

    folder = tmp_path_factory.mktemp("bad_inputs")
    env = CrystalRelaxEnv(n_max=4, max_steps=3)
    save_agent(mlp_td3(env), folder / "agent")
    (folder / "empty").mkdir()
    PPO("MlpPolicy", "Pendulum-v1", n_steps=8, batch_size=8, policy_kwargs={"net_arch": [4]}).save(folder / "ppo.zip")
    TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [4]}, buffer_size=10).save(folder / "pendulum_td3.zip")
    yield Context(env, folder, [])
    env.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_a_clear_error_before_any_work(case: Case, context: Context) -> None:
    context.calculators.clear()
    with pytest.raises(case.error, match=case.match):
        case.run(context)
    assert [calc.count for calc in context.calculators] == [0] * len(context.calculators), "force calls before the error"


def test_the_table_is_about_a_hundred_distinct_inputs() -> None:
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)


def test_good_inputs_of_the_same_kinds_are_accepted(context: Context) -> None:
    """The checks do not refuse what is fine: numpy scalars, numpy pbc flags, atoms outside the cell, a tilted cell."""
    atoms = b2()
    atoms.positions[1] += atoms.cell[0] * 3  # three cells away: fine
    atoms.pbc = np.array([True, True, True])
    optimizer = context.rl(atoms, patience=None)
    optimizer.run(fmax=np.float32(1e3), steps=np.int64(2))
    assert optimizer.force_calls == 1  # converged at the start: fmax 1e3 is above any force here
    tilted = b2(cell=[[2.85, 0, 0], [1.0, 2.85, 0], [0, 0, 2.85]])
    context.env.reset(options={"atoms": tilted})
    assert context.env.atoms.cell[1, 0] == 1.0
    assert len(list(context.hybrid(b2()).irun(fmax=0.05, steps=1))) >= 1


# -- hypothesis: random bad values never reach LAMMPS or numpy's linear algebra -------------------------------------
BAD_NUMBERS = st.sampled_from([NAN, INF, -INF, 1e300, -1e300])
HEALTH = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_clear(error: BaseException, *fragments: str) -> None:
    """A ValueError/TypeError of this package (not numpy's LinAlgError), whose message holds the fragments."""
    assert isinstance(error, (ValueError, TypeError)) and not isinstance(error, np.linalg.LinAlgError), repr(error)
    for fragment in fragments:
        assert fragment in str(error), (fragment, str(error))


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as error:  # the test inspects whatever was raised
        return error
    raise AssertionError("accepted silently")


@settings(max_examples=25, **HEALTH)
@given(atom=st.integers(0, 1), axis=st.integers(0, 2), value=BAD_NUMBERS)
def test_bad_positions(context: Context, atom: int, axis: int, value: float) -> None:
    context.calculators.clear()
    atoms = with_position(atom, value, axis)
    symbol = atoms.get_chemical_symbols()[atom]
    for call in (lambda: context.reset(atoms.copy()), lambda: context.rl(atoms.copy()), lambda: context.hybrid(atoms.copy())):
        assert_clear(raised(call), f"atom {atom} ({symbol})")
    assert all(calc.count == 0 for calc in context.calculators)


@st.composite
def bad_cells(draw: st.DrawFn) -> np.ndarray:
    cell = np.diag([2.85, 2.85, 2.85]) + np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=9, max_size=9))).reshape(3, 3)
    kind = draw(st.sampled_from(["value", "dependent", "zero-vector"]))
    row = draw(st.integers(0, 2))
    if kind == "value":
        cell[row, draw(st.integers(0, 2))] = draw(BAD_NUMBERS)
    elif kind == "dependent":
        a, b = draw(st.floats(-2, 2)), draw(st.floats(-2, 2))
        cell[row] = a * cell[(row + 1) % 3] + b * cell[(row + 2) % 3]
    else:
        cell[row] = 0.0
    return cell


@settings(max_examples=25, **HEALTH)
@given(cell=bad_cells())
# found by hypothesis: a dependent row of length ~1e-177 Å, whose squared length underflows to zero
@example(cell=np.array([[5.30712685e-179, 0.0, 6.91442813e-178], [0.0, 2.85, 0.0], [2.1875e-01, 0.0, 2.85]]))
def test_bad_cells(context: Context, cell: np.ndarray) -> None:
    context.calculators.clear()
    atoms = b2()
    atoms.set_cell(cell, scale_atoms=False)
    if not np.isfinite(cell).all():
        fragment = "cell holds NaN or inf"
    elif np.abs(cell).max() >= 1e300:
        fragment = "cell is too large"
    else:
        fragment = "cell is singular"
    for call in (lambda: context.reset(atoms.copy()), lambda: context.rl(atoms.copy())):
        assert_clear(raised(call), fragment)
    assert all(calc.count == 0 for calc in context.calculators)


@settings(max_examples=25, **HEALTH)
@given(fmax=st.one_of(st.sampled_from([NAN, INF, -INF, 0.0]), st.floats(max_value=0.0, allow_nan=False)), hybrid=st.booleans())
def test_bad_fmax(context: Context, fmax: float, hybrid: bool) -> None:
    context.calculators.clear()
    optimizer = context.hybrid() if hybrid else context.rl()
    assert_clear(raised(lambda: optimizer.run(fmax=fmax, steps=3)), "fmax")
    assert optimizer.force_calls == 0 and optimizer.nsteps == 0


@settings(max_examples=25, **HEALTH)
@given(steps=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer())))
def test_bad_steps(context: Context, steps: float) -> None:
    context.calculators.clear()
    optimizer = context.rl()
    assert_clear(raised(lambda: optimizer.run(fmax=0.05, steps=steps)), "steps")
    assert optimizer.force_calls == 0


@settings(max_examples=20, **HEALTH)
@given(n_atoms=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_random_atom_counts(context: Context, n_atoms: int, seed: int) -> None:
    """Any number of atoms at random places: either accepted, or refused with a message naming the structure."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * 4.0
    atoms = Atoms(rng.choice([13, 26], n_atoms), positions=rng.uniform(0, 4.0, (n_atoms, 3)), cell=cell, pbc=True)
    for call, limit in ((lambda: context.reset(atoms.copy()), 4), (lambda: context.rl(atoms.copy()), 2)):
        try:
            call()
        except (ValueError, TypeError) as error:
            assert_clear(error)
            message = str(error)
            assert ("has no atoms" in message) == (n_atoms == 0), message
            assert "apart" in message or "no atoms" in message or "more than" in message, message
            if "more than" in message:
                assert n_atoms > limit
        else:
            assert 0 < n_atoms <= limit

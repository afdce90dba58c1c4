"""Agents as plain files: ``settings.json`` (plain data) + ``weights.pt`` (the policy's ``state_dict``).

An agent folder never holds pickled code, so loading one cannot run anything: the policy class is looked up by
name among SB3's policy aliases and :mod:`sb3_crystal.policies`, rebuilt from plain-data ``policy_kwargs``, and
its weights are read with ``torch.load(..., weights_only=True)``.

``settings.json`` holds::

    {"format": "sb3_crystal-agent", "format_version": 1,
     "algorithm": "TD3" | "SAC", "policy_class": "CrystalTFNPolicy", "policy_kwargs": {...},
     "n_max": 2, "env_settings": {"max_displacement": 0.5, "action_scale": "fixed", ...},
     "species": ["Al", "Fe"], "calculator": "lammps", "sb3_crystal_version": "..."}

Classes in ``policy_kwargs`` (``activation_fn=nn.ReLU``, ``optimizer_class=th.optim.Adam``) are stored as
``{"__class__": "torch.nn.ReLU"}`` and only resolved from ``torch.nn`` and ``torch.optim``.

:func:`load_model` opens an agent folder, and an SB3 ``.zip`` only when asked with ``allow_pickle=True``: loading a
zip unpickles its ``data`` entry, which runs any code planted in the file. Convert a trusted zip once with
:func:`save_agent` (``sb3-crystal convert model.zip agent_folder``) and share the folder instead.

``calculator`` is the training calculator's spec (``"lammps"``, ``"matscipy:<potential>"``, ``"emt"``,
``"module:Class"``), ``null`` when unknown; :func:`check_calculator` warns when an agent relaxes with another one.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import pickle  # only for its error type: weights are read with weights_only=True
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from ase.calculators.calculator import BaseCalculator
from ase.data import atomic_numbers, chemical_symbols
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from sb3_crystal.envs.observation import CELL_ACTIONS, ObservationLayout

__all__ = [
    "DEFAULT_AGENT_DIR",
    "MOVE_SETTINGS",
    "SHIPPED_AGENTS",
    "AgentFormatError",
    "CalculatorMismatchWarning",
    "CrystalAgent",
    "NoDefaultAgentError",
    "PickleNotAllowedError",
    "ZeroPolicy",
    "as_agent",
    "calculator_mismatch",
    "check_calculator",
    "env_defaults",
    "load_agent",
    "load_default_agent",
    "load_model",
    "load_shipped_agent",
    "save_agent",
    "trained_calculator",
    "trained_species",
]

SETTINGS_FILE = "settings.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_NAME = "sb3_crystal-agent"
FORMAT_VERSION = 1

#: Where the package's shipped agent lives (a folder with settings.json and weights.pt).
DEFAULT_AGENT_DIR = Path(__file__).resolve().parent / "default_agent"

#: Agents shipped with the package, by name: ``"alfe"`` (the default: trained on varied Al–Fe cells of 2–8 atoms),
#: ``"b2"`` (a specialist trained on B2 AlFe alone, the main job's default case) and ``"curvature"`` (a residual
#: agent on the learned curvature's step: that step on structures nobody relaxed, a cloned correction on B2 AlFe).
SHIPPED_AGENTS: dict[str, Path] = {
    "alfe": DEFAULT_AGENT_DIR,
    "b2": Path(__file__).resolve().parent / "b2_agent",
    "curvature": Path(__file__).resolve().parent / "curvature_agent",
}

#: The environment settings that decide how an action moves atoms (see :class:`~sb3_crystal.envs.CrystalRelaxEnv`).
MOVE_SETTINGS: tuple[str, ...] = (
    "max_displacement",
    "action_scale",
    "force_cap",
    "min_distance",
    "action_mode",
    "max_strain",
)

_CLASS_MODULES = ("torch.nn", "torch.optim")


class AgentFormatError(ValueError):
    """An agent folder or model file that cannot be read (missing file, bad settings, unknown policy)."""


class NoDefaultAgentError(FileNotFoundError):
    """No shipped agent is installed, so a relaxer needs an explicit model."""


class PickleNotAllowedError(AgentFormatError):
    """An SB3 ``.zip`` given where only weights-only agent folders are loaded (unpickling it could run code)."""


class CalculatorMismatchWarning(UserWarning):
    """An agent relaxes with a calculator other than the one it was trained with."""


def env_defaults() -> dict[str, Any]:
    """The :class:`~sb3_crystal.envs.CrystalRelaxEnv` constructor defaults of :data:`MOVE_SETTINGS`."""
    from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv

    parameters = inspect.signature(CrystalRelaxEnv.__init__).parameters
    return {name: parameters[name].default for name in MOVE_SETTINGS}


class ZeroPolicy:
    """A policy whose action is always zero: with a residual layout, the agent that takes the observation's
    classical proposal unchanged (a residual agent before training). Takes one observation or a stacked batch, as
    SB3's ``predict`` does."""

    def predict(self, observation: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        mask = np.asarray(observation["mask"])
        strain = CELL_ACTIONS if "cell_forces" in observation else 0  # a cell layout's action ends in a strain
        return np.zeros((*mask.shape[:-1], 3 * mask.shape[-1] + strain), np.float32), None


@dataclass
class CrystalAgent:
    """A trained policy with what a relaxer needs to use it the way it was trained.

    SB3 models and agent folders both become one of these (:func:`as_agent`, :func:`load_agent`).

    :param policy: the SB3 policy (actor used deterministically).
    :param n_max: atom slots of the observation the policy was built for.
    :param env_settings: the training environment's constructor arguments (plain data); :data:`MOVE_SETTINGS`
        decide how actions move atoms.
    :param species: element symbols seen in training, ``None`` when unknown.
    :param algorithm: ``"TD3"`` or ``"SAC"``.
    :param observation: the observation layout's settings (:meth:`ObservationLayout.to_dict`), ``None``: read
        them off the policy's observation space.
    :param calculator: spec of the training calculator (see :func:`trained_calculator`), ``None`` when unknown.
    """

    policy: BasePolicy
    n_max: int
    env_settings: dict[str, Any] = field(default_factory=dict)
    species: tuple[str, ...] | None = None
    algorithm: str = "TD3"
    observation: dict[str, Any] | None = None
    calculator: str | None = None

    @property
    def crystal_env_kwargs(self) -> dict[str, Any]:
        """Same name as on :class:`~sb3_crystal.algorithms.CrystalTD3` models."""
        return self.env_settings

    def move_settings(self, **overrides: Any) -> dict[str, Any]:
        """:data:`MOVE_SETTINGS`: the environment defaults, updated by the training settings, then by ``overrides``.

        :param overrides: settings given explicitly (``None`` values are ignored).
        """
        settings = env_defaults()
        settings.update({k: v for k, v in self.env_settings.items() if k in MOVE_SETTINGS and v is not None})
        unknown = set(overrides) - set(MOVE_SETTINGS)
        if unknown:
            raise TypeError(f"Unknown move settings {sorted(unknown)}; known: {list(MOVE_SETTINGS)}")
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return settings

    @property
    def layout(self) -> ObservationLayout:
        """What the policy observes: the agent file's ``observation`` entry, else read off the policy's space."""
        if self.observation is not None:
            return ObservationLayout.from_dict(self.n_max, self.observation)
        space = getattr(self.policy, "observation_space", None)
        if space is None:
            return ObservationLayout(self.n_max)
        recorded = {key: self.env_settings.get(key) for key in ("proposal",)}  # the space shows only that there is one
        return ObservationLayout.from_space(space, **recorded)

    @property
    def size_agnostic(self) -> bool:
        """Whether the actor builds a graph from positions and so accepts any padded atom count."""
        return hasattr(getattr(self.policy, "actor", None), "graph_cache")


# -- species --------------------------------------------------------------------------------------------------------
def _symbols(numbers: Iterable[int]) -> tuple[str, ...]:
    return tuple(sorted({chemical_symbols[int(z)] for z in numbers if int(z) > 0}, key=lambda s: atomic_numbers[s]))


def _species_from_spec(spec: Any) -> tuple[str, ...] | None:
    """Elements of a dataset spec when they can be read cheaply (prototypes, files, ``Atoms``), else ``None``."""
    from ase import Atoms

    from sb3_crystal.structures.dataset import load_structures

    items = spec if isinstance(spec, (list, tuple)) else [spec]
    if any(isinstance(item, str) and item.startswith("random:") for item in items):
        return None  # random crystals would have to be generated: treat the species as unknown
    if not all(isinstance(item, (str, os.PathLike, Atoms)) for item in items):
        return None
    try:
        structures = load_structures(list(items))
    except (OSError, ValueError, TypeError, ImportError):
        return None
    return _symbols(z for atoms in structures for z in atoms.numbers) or None


def trained_species(model: Any) -> tuple[str, ...] | None:
    """Element symbols an agent was trained on, ``None`` when they cannot be known.

    In order: a ``species`` attribute; the training environment's dataset (a model that
    still has its environment); the ``structures`` of ``model.crystal_env_kwargs`` when they are prototypes or files.

    :param model: SB3 model or :class:`CrystalAgent`.
    """
    value = getattr(model, "species", None)
    if value:
        return tuple(value)
    env = model.get_env() if hasattr(model, "get_env") else None
    if env is not None:
        try:
            dataset = env.get_attr("dataset", indices=0)[0]
            return _symbols(z for atoms in dataset for z in atoms.numbers) or None
        except (AttributeError, TypeError):
            pass
    kwargs = getattr(model, "crystal_env_kwargs", None) or {}
    return _species_from_spec(kwargs["structures"]) if "structures" in kwargs else None


# -- calculators -----------------------------------------------------------------------------------------------------
def _calculator_spec(value: Any) -> str | None:
    """A calculator spec, object or class as a plain spec string; ``None`` when it cannot be named."""
    from sb3_crystal.calculators import DEFAULT_POTENTIAL, LammpsEAMCalculator

    if value is None:
        return "lammps"  # what make_calculator(None) builds
    if isinstance(value, str):
        return value
    if isinstance(value, LammpsEAMCalculator):
        potential = str(getattr(value, "potential", DEFAULT_POTENTIAL))
        return "lammps" if potential == DEFAULT_POTENTIAL else f"lammps:{potential}"
    cls = value if isinstance(value, type) else type(value) if isinstance(value, BaseCalculator) else None
    return f"{cls.__module__}:{cls.__qualname__}" if cls is not None else None


def trained_calculator(model: Any) -> str | None:
    """The spec of the calculator an agent was trained with (``"lammps"``, ``"emt"``, ``"module:Class"``, …).

    In order: a ``calculator`` attribute (:class:`CrystalAgent`); the ``calculator`` of ``model.crystal_env_kwargs``;
    the training environment's calculator (a model that still has its environment). ``None`` when unknown.

    :param model: SB3 model or :class:`CrystalAgent`.
    """
    recorded = getattr(model, "calculator", None)
    if isinstance(recorded, str):
        return recorded
    kwargs = getattr(model, "crystal_env_kwargs", None) or {}
    if "calculator" in kwargs:
        return _calculator_spec(kwargs["calculator"])
    env = model.get_env() if hasattr(model, "get_env") else None
    if env is not None:
        try:
            return _calculator_spec(env.get_attr("calculator", indices=0)[0])
        except (AttributeError, TypeError):
            pass
    return None


def _recorded_calculator(settings: dict[str, Any]) -> str | None:
    """The training calculator of an agent folder; folders written before it was recorded: their env settings'."""
    value = settings.get("calculator")
    if value is None and "calculator" in (settings.get("env_settings") or {}):
        value = _calculator_spec(settings["env_settings"]["calculator"])
    return value if isinstance(value, str) else None


def _potential_name(potential: Any) -> str:
    from sb3_crystal.calculators import PotentialNotFoundError
    from sb3_crystal.calculators.potentials import resolve_potential

    try:
        return resolve_potential(potential).name
    except (PotentialNotFoundError, ValueError, TypeError):
        return Path(str(potential)).name


def _energy_surface(calculator: Any) -> tuple[str, str]:
    """What decides the energy surface of a calculator spec or object, to compare two without building either.

    EAM calculators (``lammps``, ``matscipy``, or objects with a ``potential``) are their potential file's name, so
    LAMMPS and matscipy on one file agree; other calculators are their class name (``emt`` is ``EMT``). Nothing is
    imported or built: the spec may come from an agent file.
    """
    from sb3_crystal.calculators import DEFAULT_POTENTIAL

    inner = getattr(calculator, "calculator", None)  # a counting wrapper (ForceCallCounter): the calculator it wraps
    if isinstance(calculator, BaseCalculator) and isinstance(inner, BaseCalculator):
        calculator = inner
    if isinstance(calculator, str):
        name, _, argument = calculator.partition(":")
        key = name.strip().lower()
        if key in ("lammps", "matscipy"):
            return "eam", _potential_name(argument or DEFAULT_POTENTIAL)
        if key == "emt":
            return "class", "EMT"
        if argument and "." in name:
            return "class", argument.rpartition(".")[2]
        return "spec", calculator.strip()
    potential = getattr(calculator, "potential", None)
    if potential is not None:
        return "eam", _potential_name(potential)
    cls = calculator if isinstance(calculator, type) else type(calculator)
    return "class", cls.__name__


def calculator_mismatch(agent: Any, calculator: Any) -> str | None:
    """Why ``calculator`` differs from the one ``agent`` was trained with, ``None`` when they match or it is unknown.

    :param agent: :class:`CrystalAgent` or SB3 model.
    :param calculator: the calculator the agent relaxes with: a spec (``"emt"``) or an ASE calculator.
    """
    trained = trained_calculator(agent)
    if trained is None or calculator is None:
        return None
    if _energy_surface(trained) == _energy_surface(calculator):
        return None
    used = calculator if isinstance(calculator, str) else _calculator_spec(calculator) or type(calculator).__name__
    return (
        f"the agent was trained with calculator '{trained}' but relaxes with '{used}': its moves were learned on "
        "another energy surface and may not help (a hybrid's classical finisher still converges)"
    )


def check_calculator(agent: Any, calculator: Any) -> str | None:
    """Warn (:class:`CalculatorMismatchWarning`) when ``agent`` relaxes with another calculator than its training one.

    :param agent: :class:`CrystalAgent` or SB3 model.
    :param calculator: a calculator spec or ASE calculator.
    :return: the warning's message, ``None`` when there was nothing to warn about.
    """
    message = calculator_mismatch(agent, calculator)
    if message is not None:
        warnings.warn(message[0].upper() + message[1:], CalculatorMismatchWarning, stacklevel=2)
    return message


# -- SB3 model → agent ----------------------------------------------------------------------------------------------
def _algorithm_name(model: Any) -> str:
    from stable_baselines3 import SAC, TD3

    if isinstance(model, SAC):
        return "SAC"
    if isinstance(model, TD3):
        return "TD3"
    raise TypeError(f"Only TD3 and SAC models (and their Crystal* subclasses) are supported, not {type(model).__name__}")


def _observation_n_max(observation_space: spaces.Space) -> int:
    if not (isinstance(observation_space, spaces.Dict) and "positions" in observation_space.spaces):
        raise TypeError(f"Not a crystal agent: its observation space is {observation_space}, not CrystalRelaxEnv's Dict")
    return int(observation_space["positions"].shape[0])


def as_agent(model: Any) -> CrystalAgent:
    """A :class:`CrystalAgent` view of an SB3 TD3/SAC model (shares its policy), or the agent itself.

    :param model: :class:`CrystalAgent`, or a TD3/SAC model trained on :class:`~sb3_crystal.envs.CrystalRelaxEnv`.
    """
    if isinstance(model, CrystalAgent):
        return model
    algorithm = _algorithm_name(model)
    if not hasattr(model.policy, "_crystal_policy_kwargs"):  # so save_agent can write the agent alone (as load_agent)
        model.policy._crystal_policy_kwargs = dict(getattr(model, "policy_kwargs", None) or {})
    return CrystalAgent(
        policy=model.policy,
        n_max=_observation_n_max(model.observation_space),
        env_settings=dict(getattr(model, "crystal_env_kwargs", None) or {}),
        species=trained_species(model),
        algorithm=algorithm,
        calculator=trained_calculator(model),
    )


def crystal_spaces(n_max: int, observation: dict[str, Any] | None = None) -> tuple[spaces.Dict, spaces.Box]:
    """The observation and action spaces of :class:`~sb3_crystal.envs.CrystalRelaxEnv` for ``n_max`` slots.

    :param observation: the layout's settings (:meth:`ObservationLayout.to_dict`); ``None``: the paper's observation.
    """
    layout = ObservationLayout.from_dict(n_max, observation)
    return layout.observation_space(), layout.action_space()


# -- plain data -------------------------------------------------------------------------------------------------------
def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _encode(value: Any, where: str) -> Any:
    """Plain JSON data; classes from torch.nn / torch.optim as ``{"__class__": "torch.nn.ReLU"}``."""
    if isinstance(value, type):
        module = value.__module__
        for allowed in _CLASS_MODULES:
            # only classes the namespace itself exposes: those are what _decode can find again
            if module.startswith(allowed) and getattr(_module(allowed), value.__name__, None) is value:
                return {"__class__": f"{allowed}.{value.__name__}"}
        raise ValueError(f"{where}: class {module}.{value.__qualname__} cannot be saved (only torch.nn / torch.optim classes)")
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if not _is_plain(value):
        raise ValueError(f"{where}: {type(value).__name__} value {value!r} is not plain data (JSON)")
    return value


def _module(name: str) -> Any:
    return {"torch.nn": th.nn, "torch.optim": th.optim}[name]


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            module, _, name = str(value["__class__"]).rpartition(".")
            cls = getattr(_module(module), name, None) if module in _CLASS_MODULES else None
            if not isinstance(cls, type):
                raise AgentFormatError(f"class {value['__class__']!r} is not a torch.nn / torch.optim class")
            return cls
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _plain_env_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The plain-data entries of an environment's constructor arguments (calculator objects, ``Atoms`` dropped)."""
    settings = {}
    for key, value in kwargs.items():
        if isinstance(value, tuple):
            value = list(value)
        if _is_plain(value):
            settings[key] = value
    return settings


# -- save / load --------------------------------------------------------------------------------------------------------
def save_agent(model: Any, folder: str | os.PathLike) -> Path:
    """Write an agent folder (``settings.json`` + ``weights.pt``) from a trained TD3/SAC model or :class:`CrystalAgent`.

    :param model: the model (its ``policy_kwargs`` must be plain data or torch.nn / torch.optim classes).
    :param folder: destination folder (created; existing files are replaced).
    :return: the folder.
    """
    agent = as_agent(model)
    policy_kwargs = getattr(model, "policy_kwargs", None)
    if policy_kwargs is None:
        policy_kwargs = getattr(agent.policy, "_crystal_policy_kwargs", {})
    settings = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "algorithm": agent.algorithm,
        "policy_class": type(agent.policy).__name__,
        "policy_kwargs": _encode(dict(policy_kwargs), "policy_kwargs"),
        "n_max": agent.n_max,
        "observation": agent.layout.to_dict(),
        "env_settings": _plain_env_settings(agent.env_settings),
        "species": list(agent.species) if agent.species else None,
        "calculator": agent.calculator,
        "sb3_crystal_version": _version(),
    }
    # fail before writing anything if the class cannot be found again by name
    _policy_class(settings["algorithm"], settings["policy_class"])
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().clone() for key, value in agent.policy.state_dict().items()}
    th.save(state, path / WEIGHTS_FILE)
    (path / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def _version() -> str:
    from sb3_crystal import __version__

    return __version__


def _policy_class(algorithm: str, name: str) -> type[BasePolicy]:
    """A policy class by name: the algorithm's SB3 aliases (crystal ones registered), then :mod:`sb3_crystal.policies`."""
    from stable_baselines3 import SAC, TD3

    import sb3_crystal.policies as crystal_policies

    algorithms = {"TD3": TD3, "SAC": SAC}
    if algorithm not in algorithms:
        raise AgentFormatError(f"unknown algorithm {algorithm!r}: expected TD3 or SAC")
    crystal_policies.register_policy_aliases()
    cls = algorithms[algorithm].policy_aliases.get(name)
    if cls is None:
        candidate = getattr(crystal_policies, name, None)
        cls = candidate if isinstance(candidate, type) and issubclass(candidate, BasePolicy) else None
    if cls is None:
        raise AgentFormatError(f"unknown policy class {name!r} for {algorithm}")
    return cls


def load_agent(folder: str | os.PathLike, device: str | th.device = "cpu") -> CrystalAgent:
    """Load an agent folder written by :func:`save_agent` (no unpickling of code).

    :param folder: folder with ``settings.json`` and ``weights.pt``.
    :param device: torch device of the policy.
    :raises AgentFormatError: missing or malformed files, unknown policy class, weights that do not fit.
    """
    path = Path(folder)
    settings_path, weights_path = path / SETTINGS_FILE, path / WEIGHTS_FILE
    for file in (settings_path, weights_path):
        if not file.is_file():
            raise AgentFormatError(f"{path}: not an agent folder ({file.name} missing)")
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AgentFormatError(f"{settings_path}: not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise AgentFormatError(f"{settings_path}: not an sb3_crystal agent (a JSON {type(settings).__name__}, not an object)")
    if settings.get("format") != FORMAT_NAME:
        raise AgentFormatError(f"{settings_path}: not an sb3_crystal agent (format {settings.get('format')!r})")
    if int(settings.get("format_version", 0)) > FORMAT_VERSION:
        raise AgentFormatError(f"{settings_path}: format version {settings['format_version']} is newer than this package")
    try:
        algorithm, n_max = str(settings["algorithm"]), settings["n_max"]
        if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
            raise AgentFormatError(f"n_max must be a positive integer, got {n_max!r}")
        policy_class = _policy_class(algorithm, str(settings["policy_class"]))
        policy_kwargs = _decode(settings.get("policy_kwargs") or {})
    except KeyError as err:
        raise AgentFormatError(f"{settings_path}: missing entry {err}") from None
    except AgentFormatError as err:
        raise AgentFormatError(f"{settings_path}: {err}") from None
    try:
        observation_space, action_space = crystal_spaces(n_max, settings.get("observation"))
    except (TypeError, ValueError) as err:
        raise AgentFormatError(f"{settings_path}: bad observation entry ({err})") from None
    # the optimizer is built but never stepped: the learning rate is irrelevant
    policy = policy_class(observation_space, action_space, lambda _: 0.0, **policy_kwargs)
    try:
        state = th.load(weights_path, map_location=device, weights_only=True)
        policy.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise AgentFormatError(f"{weights_path}: weights do not fit the {settings['policy_class']} policy: {err}") from None
    policy = policy.to(device)
    policy.set_training_mode(False)
    policy._crystal_policy_kwargs = policy_kwargs  # so save_agent can write this agent again
    species = settings.get("species")
    return CrystalAgent(
        policy=policy,
        n_max=n_max,
        env_settings=dict(settings.get("env_settings") or {}),
        species=tuple(species) if species else None,
        algorithm=algorithm,
        observation=settings.get("observation"),
        calculator=_recorded_calculator(settings),
    )


def load_default_agent(device: str | th.device = "cpu") -> CrystalAgent:
    """The package's shipped Al–Fe agent (the default ``model`` of the relaxers).

    :raises NoDefaultAgentError: when no agent is installed in :data:`DEFAULT_AGENT_DIR`.
    """
    return load_shipped_agent("alfe", device=device)


def load_shipped_agent(name: str, device: str | th.device = "cpu") -> CrystalAgent:
    """One of the agents shipped with the package.

    :param name: a key of :data:`SHIPPED_AGENTS` (``"alfe"``, ``"b2"``, ``"curvature"``)
    :param device: torch device
    :raises ValueError: an unknown name
    :raises NoDefaultAgentError: the agent's files are not installed
    """
    if name not in SHIPPED_AGENTS:
        raise ValueError(f"unknown shipped agent {name!r}; shipped: {sorted(SHIPPED_AGENTS)}")
    folder = SHIPPED_AGENTS[name]
    if not (folder / SETTINGS_FILE).is_file():
        raise NoDefaultAgentError(
            f"No agent is installed in {folder} (expected {SETTINGS_FILE} and {WEIGHTS_FILE}): "
            "pass a trained model, e.g. model=CrystalTD3.load('agent.zip') or model=load_agent('agent_folder')"
        )
    return load_agent(folder, device=device)


def load_model(path: str | os.PathLike, device: str | th.device = "cpu", allow_pickle: bool = False) -> CrystalAgent:
    """An agent from an agent folder (weights only: safe), or from an SB3 ``.zip`` of (Crystal)TD3/SAC when asked.

    Loading an SB3 zip unpickles its ``data`` entry, which runs any code planted in the file, so zips are refused
    unless ``allow_pickle`` is true. Convert a trusted zip once into an agent folder (:func:`save_agent`, or
    ``sb3-crystal convert model.zip agent_folder``) and load that.

    :param path: the folder or zip file.
    :param device: torch device.
    :param allow_pickle: load an SB3 zip (unpickling it: only for files you trust).
    :raises FileNotFoundError: nothing at ``path``.
    :raises PickleNotAllowedError: an SB3 zip without ``allow_pickle``.
    :raises AgentFormatError: a folder or file that is not an agent or SB3 TD3/SAC model.
    """
    target = Path(path)
    if target.is_dir():
        return load_agent(target, device=device)
    if not target.is_file():
        raise FileNotFoundError(f"No model at {os.fspath(path)} (expected an agent folder or an SB3 .zip)")
    import zipfile

    if not zipfile.is_zipfile(target):
        raise AgentFormatError(f"{target}: neither an SB3 model zip nor an agent folder")
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"{target} is an SB3 model zip: loading it unpickles its contents, which can run code planted in the "
            "file. If you trust it, load it with load_model(path, allow_pickle=True), or convert it once into a "
            f"weights-only agent folder: save_agent(load_model(path, allow_pickle=True), folder), or "
            f"sb3-crystal convert {target} AGENT_FOLDER"
        )
    return _load_sb3_zip(target, device)


def _load_sb3_zip(target: Path, device: str | th.device) -> CrystalAgent:
    """An SB3 zip of (Crystal)TD3/SAC as an agent (unpickles: the caller has allowed it)."""
    from stable_baselines3.common.save_util import load_from_zip_file
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    from sb3_crystal.algorithms import CrystalSAC, CrystalTD3

    # Unpickled content can raise anything (a class that no longer exists, a foreign package's error): every failure
    # becomes one AgentFormatError naming the file.
    try:
        data, _, _ = load_from_zip_file(target, device=device, load_data=True)
    except Exception as err:
        raise AgentFormatError(f"{target}: cannot read the SB3 model ({_one_line(err)})") from None
    policy_class = (data or {}).get("policy_class")
    if not isinstance(policy_class, type):
        raise AgentFormatError(f"{target}: not an SB3 model (no policy class recorded)")
    if issubclass(policy_class, SACPolicy):
        algorithm: type[CrystalTD3] | type[CrystalSAC] = CrystalSAC
    elif issubclass(policy_class, TD3Policy):
        algorithm = CrystalTD3
    else:
        raise AgentFormatError(f"{target}: a model with policy {policy_class.__name__}, not TD3 or SAC")
    try:
        return as_agent(algorithm.load(target, device=device))
    except Exception as err:
        raise AgentFormatError(f"{target}: cannot load as {algorithm.__name__} ({_one_line(err)})") from None


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())

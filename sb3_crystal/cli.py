"""The ``sb3-crystal`` command line: one function per subcommand (``benchmark``, ``relax``, ``convert``, ``train``,
``dataset``).

User errors (an unknown prototype or optimizer, a missing file, a bad number, an output that cannot be written)
print one line on stderr and exit with status 2, before any work starts and with nothing written; ``--help`` works
on every subcommand. Inputs and outputs are checked by the ``check_*`` / ``read_*`` / ``load_*`` functions below,
one concern each, which the subcommands call before their work.

Agents: shipped names (``default``, ``alfe``, ``b2``) always mean the agents shipped with the package, never a file
of that name (write ``./b2`` for one); paths load weights-only agent folders, and an SB3 ``.zip`` (unpickled, so it
can run code planted in it) only with ``--allow-pickle``. ``sb3-crystal convert`` turns a trusted zip into a folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sb3_crystal.optimizers import STEPWISE_OPTIMIZERS
from sb3_crystal.threads import blas_threads

__all__ = [
    "MAX_BETA",
    "SHIPPED_MODEL_NAMES",
    "UserError",
    "blas_threads",
    "build_parser",
    "check_calculator_evaluates",
    "check_output_file",
    "check_output_folder",
    "check_relax_input",
    "check_trajectory_file",
    "load_cli_agent",
    "main",
    "make_cli_calculator",
    "read_structure_file",
]

#: Largest distortion β (Å) the benchmark accepts: each coordinate moves by up to β, and at 2 Å atoms of metals
#: (nearest neighbours 2.4–2.9 Å apart) may already land on each other's sites, so a larger β tests nothing more.
MAX_BETA = 2.0


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: message``) with exit status 2."""

    #: names of the subcommands (filled in by :func:`build_parser`).
    commands: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- argument types: each raises ArgumentTypeError, which the parser turns into one line -------------------------
def _number(kind: Callable[[str], Any], check: Callable[[Any], bool], rule: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: '{text}'") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text} is not {rule}")
        return value

    return parse


_non_negative_float = _number(float, lambda v: v >= 0, "≥ 0")
_positive_float = _number(float, lambda v: v > 0, "> 0")
_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "≥ 0")
_beta = _number(float, lambda v: 0 <= v <= MAX_BETA, f"in [0, {MAX_BETA:g}] Å")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _optimizer_name(text: str) -> str:
    from sb3_crystal.benchmark.classical import make_relaxer

    try:
        return make_relaxer(text).name
    except KeyError as err:
        raise argparse.ArgumentTypeError(str(err.args[0])) from None


# -- helpers ------------------------------------------------------------------------------------------------------
# -- inputs: structures ---------------------------------------------------------------------------------------------
def _is_prototype(name: str) -> bool:
    from sb3_crystal.structures.prototypes import PROTOTYPES

    return name.lower() in {key.lower() for key in PROTOTYPES}


def _plain_atoms(atoms: Any, source: str) -> Any:
    from ase import Atoms

    plain = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    plain.info["source"] = source
    return plain


def read_structure_file(path: str | os.PathLike) -> list[Any]:
    """Every structure of a file: the package's reader for the formats it knows by name (CIF, POSCAR, extended XYZ,
    the dataset CSV), else ASE's readers (format guessed from name and content), else pymatgen's
    ``Structure.from_file``.

    :param path: an existing file.
    :return: ``Atoms`` with ``info["source"]`` (``"<file>"``, or ``"<file>:<k>"`` for several).
    :raises UserError: no reader could read it (each reader's complaint is named).
    """
    from sb3_crystal.structures.io import StructureFileError, _format_from_name, read_structures

    name = os.fspath(path)
    if _format_from_name(Path(name)) is not None:  # the package's own reader, with its own checks: its word is final
        try:
            found = list(read_structures(name))
        except (StructureFileError, OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot read structures from '{name}': {err}") from None
        for k, atoms in enumerate(found):
            atoms.info.setdefault("source", name if len(found) == 1 else f"{name}:{k}")
        return found
    complaints = []
    try:  # ASE's readers raise many types on a file they cannot read: each is one complaint
        from ase.io import read

        frames = read(name, index=":")
        if frames:
            return [_plain_atoms(a, name if len(frames) == 1 else f"{name}:{k}") for k, a in enumerate(frames)]
        complaints.append("ASE: no structure")
    except Exception as err:
        complaints.append(f"ASE: {_one_line(err)}")
    try:  # so do pymatgen's
        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor

        return [_plain_atoms(AseAtomsAdaptor.get_atoms(Structure.from_file(name)), name)]
    except Exception as err:
        complaints.append(f"pymatgen: {_one_line(err)}")
    raise UserError(f"cannot read structures from '{name}' ({'; '.join(complaints)})")


def _load_structures(names: Sequence[str]) -> list[Any]:
    """Prototype names, random specs or structure files → unrelaxed ``Atoms`` with ``info["source"]`` (1-atom cells
    made 2×1×1)."""
    from sb3_crystal.structures.dataset import load_structures, with_two_atoms_at_least
    from sb3_crystal.structures.prototypes import PROTOTYPES

    structures = []
    for name in names:
        try:
            found = read_structure_file(name) if os.path.isfile(name) and not _is_prototype(name) else load_structures(name)
        except FileNotFoundError:  # the loader's answer for a name that is no prototype, spec or file
            raise UserError(
                f"unknown structure '{name}': neither a prototype ({', '.join(PROTOTYPES)}) nor an existing file"
            ) from None
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot read structures from '{name}': {err}") from err
        if not found:
            raise UserError(f"no structure in '{name}'")
        structures += [with_two_atoms_at_least(atoms) for atoms in found]
    return structures


def read_one_structure(name: str) -> Any:
    """A structure file of one structure (any format :func:`read_structure_file` reads) or a prototype name → ``Atoms``."""
    from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype

    if not os.path.isfile(name):
        if _is_prototype(name):
            atoms = build_prototype({key.lower(): key for key in PROTOTYPES}[name.lower()])
            atoms.info["source"] = name
            return atoms
        raise UserError(f"no structure file '{name}' (nor a prototype: {', '.join(PROTOTYPES)})")
    found = read_structure_file(name)
    if len(found) != 1:
        raise UserError(f"'{name}' holds {len(found)} structures; relax takes a file of one structure")
    return found[0]


def check_relax_input(atoms: Any, where: str, input_min_distance: float) -> None:
    """Raise :class:`UserError` unless ``atoms`` is a structure a relaxation can start from: some atoms, a fully
    periodic cell of non-zero volume, finite positions, no two atoms closer than ``input_min_distance``.

    :param atoms: the structure.
    :param where: its name in messages (the file).
    :param input_min_distance: closest approach allowed, Å (0: not checked).
    """
    import numpy as np

    from sb3_crystal.structures.geometry import closest_pair

    if len(atoms) == 0:
        raise UserError(f"{where}: the structure has no atoms")
    if not np.all(atoms.pbc):
        raise UserError(f"{where}: the cell is not periodic in all three directions (pbc={atoms.pbc.tolist()})")
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if not volume > 1e-6:
        raise UserError(f"{where}: the cell has zero volume ({volume:.3g} Å³)")
    if not np.all(np.isfinite(atoms.positions)):
        raise UserError(f"{where}: positions are not all finite numbers")
    if input_min_distance > 0:
        i, j, distance = closest_pair(atoms, search_radius=input_min_distance)
        if distance < input_min_distance:
            pair = f"atom {i} and its periodic image" if i == j else f"atoms {i} and {j}"
            raise UserError(
                f"{where}: {pair} are {distance:.3g} Å apart, closer than {input_min_distance:g} Å "
                "(--input-min-distance): forces there are meaningless; fix the structure"
            )


# -- outputs: checked before any work, nothing left behind --------------------------------------------------------
def check_output_file(path: Path, option: str, structures: Any) -> None:
    """Raise :class:`UserError` unless ``structures`` can be written to ``path`` (its folder exists and takes files,
    its name gives a format that holds them). Checked by writing them into a temporary folder beside it, removed.

    :param path: the output file.
    :param option: the command-line option that named it (for the message).
    :param structures: an ``Atoms`` or a list of them, as they will be written.
    """
    from sb3_crystal.structures.io import write_structure

    where = f"{option} {os.fspath(path)}"
    if path.is_dir():
        raise UserError(f"{where}: is a folder, not a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{where}: the folder {os.fspath(folder)} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{where}: the file exists and is not writable")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".sb3-crystal-check-", dir=folder))
    except OSError as err:
        raise UserError(f"{where}: cannot write in {os.fspath(folder)} ({err.strerror or err})") from None
    try:
        write_structure(structures, probe / path.name)
    except Exception as err:  # ASE's writers raise many types for a format that cannot hold these structures
        raise UserError(
            f"{where}: cannot write the structure(s) in the format of this name ({_one_line(err)}); "
            "use .extxyz, .cif or POSCAR"
        ) from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def check_trajectory_file(path: Path) -> None:
    """Raise :class:`UserError` unless ``path`` is a writable file name ending in ``.traj`` (ASE's binary trajectory:
    a text name would hold binary data)."""
    where = f"--trajectory {os.fspath(path)}"
    if path.suffix.lower() != ".traj":
        raise UserError(
            f"{where}: the trajectory is written in ASE's binary format: give a name ending in .traj "
            f"(and for a text copy afterwards: ase convert {path.with_suffix('.traj').name} {path.name})"
        )
    if path.is_dir():
        raise UserError(f"{where}: is a folder, not a file name")
    if not path.parent.is_dir():
        raise UserError(f"{where}: the folder {os.fspath(path.parent)} does not exist")
    try:
        handle, probe = tempfile.mkstemp(prefix=".sb3-crystal-check-", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{where}: cannot write in {os.fspath(path.parent)} ({err.strerror or err})") from None


def check_output_folder(path: Path, option: str) -> None:
    """Raise :class:`UserError` unless files can be written in the folder ``path`` (made when missing). Checked by
    making it and a file in it; what the check made is removed again."""
    where = f"{option} {os.fspath(path)}"
    if path.exists() and not path.is_dir():
        raise UserError(f"{where}: is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in reversed([p for p in (path, *path.parents) if not p.exists()]):
            folder.mkdir()
            created.append(folder)
        handle, probe = tempfile.mkstemp(prefix=".sb3-crystal-check-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{where}: cannot write there ({err.strerror or err})") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


# -- agents and calculators -------------------------------------------------------------------------------------------
#: ``--model`` names of the shipped agents (any case) -> (name in agent_io.SHIPPED_AGENTS, relaxer label). These never
#: mean a file of that name: ``./b2`` does.
SHIPPED_MODEL_NAMES = {
    "default": ("alfe", "RL"),
    "alfe": ("alfe", "RL"),
    "b2": ("b2", "RL-B2"),
    "curvature": ("curvature", "RL-curvature"),
}
#: ``relax --model`` value for :class:`~sb3_crystal.relax.LearnedCurvature` (the learned-Hessian relaxer, alone).
LEARNED_CURVATURE = "learned-curvature"
#: What the shipped names of every ``--model`` option mean (:data:`SHIPPED_MODEL_NAMES`).
_SHIPPED_MODELS_HELP = (
    "'default' (or 'alfe') = the shipped Al-Fe agent, 'b2' = the shipped B2 AlFe specialist, 'curvature' = the shipped "
    "residual agent on the learned curvature (these names never mean a file: write ./b2 for one)"
)


def load_cli_agent(name: str, allow_pickle: bool = False) -> Any:
    """A ``--model`` value as an agent: a shipped name, else an agent folder, else (with ``allow_pickle``) an SB3 zip.

    :param name: the value.
    :param allow_pickle: let SB3 zips load (unpickling them).
    :raises UserError: nothing there, not an agent, a zip without ``allow_pickle``, a shipped agent not installed.
    """
    from sb3_crystal.relax.agent_io import (
        AgentFormatError,
        NoDefaultAgentError,
        PickleNotAllowedError,
        load_model,
        load_shipped_agent,
    )

    shipped = SHIPPED_MODEL_NAMES.get(name.lower())
    try:
        return load_shipped_agent(shipped[0]) if shipped else load_model(name, allow_pickle=allow_pickle)
    except PickleNotAllowedError:
        raise UserError(
            f"model '{name}' is an SB3 zip, and loading one runs code stored in it (pickle): if you trust the file, "
            f"add --allow-pickle, or convert it once into a weights-only agent folder: sb3-crystal convert {name} FOLDER"
        ) from None
    except (OSError, AgentFormatError, NoDefaultAgentError) as err:
        message = str(err)
        raise UserError(message if name in message else f"model '{name}': {message}") from None


def make_cli_calculator(spec: str) -> Any:
    """A ``--calculator`` spec as an ASE calculator (:class:`UserError` when it cannot be built)."""
    from sb3_crystal.calculators import PotentialNotFoundError, make_calculator

    try:
        return make_calculator(spec)
    except (ValueError, TypeError, ImportError, PotentialNotFoundError) as err:
        raise UserError(f"calculator '{spec}': {err}") from err


def check_calculator_evaluates(atoms: Any, spec: str, where: str) -> None:
    """Raise :class:`UserError` unless ``atoms.calc`` gives a finite energy and finite forces for ``atoms``.

    One evaluation of the start, before the relaxer's own (which counts force calls itself: its counts do not change).
    """
    import numpy as np

    try:  # calculators raise many types on what they cannot compute (EMT: NotImplementedError for Fe)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    except Exception as err:
        raise UserError(
            f"calculator '{spec}' cannot evaluate {where} ({atoms.get_chemical_formula()}): {_one_line(err)}"
        ) from None
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise UserError(f"calculator '{spec}' gives non-finite energy or forces for {where}")


def _warn_calculator_mismatch(agent: Any, spec: str, prog: str = "sb3-crystal") -> None:
    from sb3_crystal.relax.agent_io import calculator_mismatch

    message = calculator_mismatch(agent, spec)
    if message is not None:
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)


def _describe_minimum(report: Any) -> str:
    kind = "minimum" if report.is_minimum else "SADDLE POINT (other minima are legitimate end points)"
    return (
        f"{report.source}: {report.formula}, {report.n_atoms} atoms, E = {report.energy:.6f} eV "
        f"({report.energy / report.n_atoms:.6f} eV/atom), fmax {report.fmax:.1e} eV/Å, "
        f"lowest Hessian eigenvalue {report.lowest_eigenvalue:.4g} eV/Å² → {kind}"
    )


# -- subcommands --------------------------------------------------------------------------------------------------
def cmd_benchmark(args: argparse.Namespace) -> int:
    """``sb3-crystal benchmark``: classical optimizers on seeded distorted starts, force calls per threshold."""
    with blas_threads(args.blas_threads) if args.blas_threads else contextlib.nullcontext():
        return _benchmark(args)


def _benchmark(args: argparse.Namespace) -> int:
    import warnings

    from sb3_crystal.benchmark.harness import format_table, run_benchmark, summarize, write_results
    from sb3_crystal.calculators import UnsupportedElementsError
    from sb3_crystal.relax.agent_io import CalculatorMismatchWarning
    from sb3_crystal.structures.minima import RelaxationError, relaxed_minimum

    t0 = time.perf_counter()
    check_output_folder(args.out, "--out")
    structures = _load_structures(args.structures)
    calculator = make_cli_calculator(args.calculator)
    agents = _benchmark_agents(args)
    minima = []
    for atoms in structures:
        try:
            minimum, report = relaxed_minimum(atoms, calculator)
        except (UnsupportedElementsError, RelaxationError) as err:
            raise UserError(f"{atoms.info['source']}: {err}") from err
        minimum.info["source"] = atoms.info["source"]
        print(_describe_minimum(report), flush=True)
        minima.append(minimum)
    if args.family is None:  # the main job's default: the unseen family beside B2 AlFe
        args.family = list(DEFAULT_FAMILIES) if args.structures == ["AlFe-B2"] else []
    family_cells: list[Any] = []
    family_starts: list[list[Any]] = []
    for name in args.family:
        cells, groups = _family_groups(name, args.family_cells, calculator)
        family_cells += cells
        family_starts += groups
    relaxers: list[Any] = list(dict.fromkeys(args.optimizers))  # "BFGS bfgs" is one optimizer
    relaxers += _agent_relaxers(agents, args)
    relaxers += _learned_curvature(args, [*minima, *family_cells])
    largest = max((len(cell) for cell in family_cells), default=0)
    fitting = [relaxer for relaxer in relaxers if _takes_atoms(relaxer, largest)]
    for relaxer in relaxers:
        if relaxer not in fitting:
            print(f"{relaxer.name}: a fixed-size network of {relaxer.agent.n_max} atom slots skips the families", flush=True)
    runs = [(minima, relaxers, None), (family_cells, fitting, family_starts)]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalculatorMismatchWarning)  # said once per agent, above
        warnings.filterwarnings("ignore", message="RLOptimizer: the agent")  # a stop is a failed run in the table
        for structures_run, relaxers_run, starts in runs:
            if not structures_run:
                continue
            rows += run_benchmark(
                structures_run,
                optimizers=relaxers_run,
                beta=args.beta,
                fmaxes=args.fmax,
                n_starts=args.n_starts,
                seed=args.seed,
                calculator=calculator,
                max_steps=args.max_steps,
                min_distance=args.min_distance,
                progress=False if args.no_progress else None,
                starts=starts,
            )
    title = f"β = {args.beta:g} Å, {args.n_starts} starts (seed {args.seed}), calculator {args.calculator}"
    if args.family:
        title += f"; families {', '.join(args.family)} (validation split, first {args.family_cells} cells, their starts)"
    paths = write_results(rows, args.out, title=f"Force calls to reach ε: {title}")
    print(f"\nForce calls to reach ε ({title}; statistics over converged runs):\n")
    print(format_table(summarize(rows)))
    print(f"\nWrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.1f} s")
    return 0


#: ``benchmark``'s families when ``--structures`` and ``--family`` are left at their defaults (the README's main job).
DEFAULT_FAMILIES = ("random_4-8_beta0.3",)


def _family_name(text: str) -> str:
    from sb3_crystal.structures.families import FAMILIES

    if text not in FAMILIES:
        raise argparse.ArgumentTypeError(f"unknown family {text!r}: choose from {', '.join(FAMILIES)}")
    return text


def _learned_curvature(args: argparse.Namespace, structures: Sequence[Any]) -> list[Any]:
    """The LearnedCurvature relaxer, unless ``--no-learned-curvature``, when its model covers the run: Al–Fe
    structures on the default EAM (said in a line otherwise)."""
    from sb3_crystal.benchmark.agents import LearnedCurvatureRelaxer

    if args.no_learned_curvature:
        return []
    elements = {symbol for atoms in structures for symbol in atoms.get_chemical_symbols()}
    if args.calculator.lower() != "lammps" or not elements <= {"Al", "Fe"}:
        print("LearnedCurvature: its Hessian model is the Al–Fe EAM's: not run on these structures", flush=True)
        return []
    return [LearnedCurvatureRelaxer()]


def _takes_atoms(relaxer: Any, n_atoms: int) -> bool:
    """Whether a relaxer can relax structures of ``n_atoms`` atoms (a fixed-size agent network cannot beyond its slots)."""
    agent = getattr(relaxer, "agent", None)
    return agent is None or agent.size_agnostic or n_atoms <= agent.n_max


def _family_groups(name: str, n_cells: int, calculator: Any) -> tuple[list[Any], list[list[Any]]]:
    """The cells of a test family's validation split, named by the family so the tables pool them, and their starts."""
    from sb3_crystal.structures.families import FAMILIES, test_family

    cells_wanted = min(n_cells, FAMILIES[name].n_cells)
    print(f"building family {name} (validation split, {cells_wanted} cells)...", flush=True)
    family = test_family(name, "validation", calculator=calculator, n_cells=cells_wanted)
    label = f"{name} (unseen)"
    cells, groups = [], []
    for j, cell in enumerate(family.cells):
        reference = cell.copy()
        reference.info = dict(cell.info, name=label)
        cells.append(reference)
        groups.append([start for start in family.starts if start.info["cell"] == j])
    return cells, groups


def _model_names(args: argparse.Namespace) -> list[str]:
    """``--model`` resolved: ``auto`` is the shipped Al–Fe agent, plus the shipped B2 specialist and the curvature agent
    on the default case;
    shipped names in their canonical spelling, each agent once."""
    if "none" in [name.lower() for name in args.model]:
        return []
    auto = ["default", "b2", "curvature"] if args.structures == ["AlFe-B2"] else ["default"]
    names = [resolved for name in args.model for resolved in (auto if name.lower() == "auto" else [name])]
    return list(dict.fromkeys(_canonical_model_name(name) for name in names))


def _canonical_model_name(name: str) -> str:
    """A shipped name as its first spelling in :data:`SHIPPED_MODEL_NAMES` (``ALFE`` → ``default``), paths as they are."""
    shipped = SHIPPED_MODEL_NAMES.get(name.lower())
    if shipped is None:
        return name
    return next(key for key, (agent, _) in SHIPPED_MODEL_NAMES.items() if agent == shipped[0])


def _benchmark_agents(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(label, agent)`` for each ``--model`` (shipped agents that are not installed are skipped, with a line)."""
    from sb3_crystal.relax.agent_io import NoDefaultAgentError, load_shipped_agent

    agents = []
    names = _model_names(args)
    for k, name in enumerate(names):
        shipped = SHIPPED_MODEL_NAMES.get(name.lower())
        if shipped:
            try:
                agent = load_shipped_agent(shipped[0])
            except NoDefaultAgentError:
                print(f"The shipped agent '{name}' is not installed: skipped (give one with --model PATH).", flush=True)
                continue
        else:
            agent = load_cli_agent(name, allow_pickle=args.allow_pickle)
        _warn_calculator_mismatch(agent, args.calculator)
        agents.append((shipped[1] if shipped else ("RL" if len(names) == 1 else f"RL-{k + 1}"), agent))
    return agents


def _agent_relaxers(agents: Sequence[tuple[str, Any]], args: argparse.Namespace) -> list[Any]:
    """The agent alone and the hybrid for each agent."""
    from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer

    relaxers: list[Any] = []
    for label, agent in agents:
        relaxers += [
            AgentRelaxer(agent, name=label),
            *(
                HybridRelaxer(agent, switch_fmax=args.switch_fmax, finisher=name, name=f"{label}+{name}@{args.switch_fmax:g}")
                for name in args.finishers
            ),
        ]
    if not relaxers:
        print("No trained agent: classical optimizers only.", flush=True)
    return relaxers


#: The hybrid's finishers: "auto" (sb3_crystal.relax.hybrid_optimizer.DEFAULT_FINISHER) and the shared table's stepwise
#: optimizers (sb3_crystal.optimizers imports no torch).
_FINISHERS = ("auto", *STEPWISE_OPTIMIZERS)


def _finisher_name(text: str) -> str:
    lookup = {name.lower(): name for name in _FINISHERS}
    if text.lower() not in lookup:
        raise argparse.ArgumentTypeError(f"unknown finisher '{text}': choose from {', '.join(_FINISHERS)}")
    return lookup[text.lower()]


class _RenamedOption(argparse.Action):
    """The deprecated spelling of an option: stores under the new option's ``dest`` and says so on stderr.

    :param new: the option's current spelling.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def _add_benchmark(subparsers: Any) -> None:
    from sb3_crystal.optimizers import DEFAULT_OPTIMIZERS

    parser = subparsers.add_parser(
        "benchmark",
        help="force calls of classical optimizers on distorted structures",
        description=(
            "Relax seeded distorted starts of each structure with each optimizer to each force threshold ε and "
            "count force calls. Each structure is first relaxed (cached) and reported as minimum or saddle point. "
            "Writes runs.csv, summary.csv, summary.md and force_calls.png into --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--structures", nargs="+", default=["AlFe-B2"], metavar="NAME_OR_FILE", help="prototype names or structure files"
    )
    parser.add_argument(
        "--beta", type=_beta, default=0.5, help=f"distortion β in Å, 0 ≤ β ≤ {MAX_BETA:g} (coordinates += β·U(−1,1))"
    )
    parser.add_argument(
        "--fmax", type=_positive_float, nargs="+", default=[0.1, 0.05, 0.01], metavar="EPS", help="force thresholds ε, eV/Å"
    )
    parser.add_argument("--n-starts", type=_positive_int, default=20, help="distorted starts per structure")
    parser.add_argument(
        "--family",
        nargs="*",
        type=_family_name,
        default=None,
        metavar="NAME",
        help="test families (sb3_crystal.structures.families, validation split: cells no training run uses) "
        "benchmarked beside --structures with their own fixed starts (default: random_4-8_beta0.3 when --structures "
        "is left at AlFe-B2, else none; none: give --family alone)",
    )
    parser.add_argument(
        "--family-cells", type=_positive_int, default=8, help="cells of each family (its first ones), 2 starts each"
    )
    parser.add_argument(
        "--no-learned-curvature",
        action="store_true",
        help="leave out LearnedCurvature (the learned Hessian's quasi-Newton steps; Al–Fe on the default EAM only)",
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="start k uses numpy default_rng(seed + k)")
    parser.add_argument(
        "--optimizers", type=_optimizer_name, nargs="+", default=list(DEFAULT_OPTIMIZERS), metavar="NAME", help="relaxers"
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["auto"],
        metavar="MODEL",
        help="trained agents, each run alone (RL) and as a hybrid: agent folders (weights only), or SB3 zips with "
        f"--allow-pickle; {_SHIPPED_MODELS_HELP}, 'auto' = 'default', plus 'b2' and 'curvature' when the structure is "
        "the default AlFe-B2; 'none' = classical optimizers only",
    )
    _add_allow_pickle_option(parser)
    parser.add_argument(
        "--switch-fmax", type=_positive_float, default=0.1, help="hybrid: agent until fmax ≤ this, then the finisher, eV/Å"
    )
    parser.add_argument(
        "--finishers",
        type=_finisher_name,
        nargs="+",
        default=[_FINISHERS[0]],
        metavar="NAME",
        help=f"the hybrid's finishers (classical optimizers), one hybrid each ({', '.join(_FINISHERS)})",
    )
    parser.add_argument(
        "--hybrid-optimizers", dest="finishers", action=_RenamedOption, new="--finishers", type=_finisher_name, nargs="+"
    )
    _add_calculator_option(parser)
    parser.add_argument("--max-steps", type=_positive_int, default=1000, help="optimizer step cap per run")
    parser.add_argument(
        "--min-distance",
        type=_non_negative_float,
        default=1.5,
        help="redraw the displacements of atoms closer than this in a start (Å; the environment's rule; 0 = none)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmark"), help="output folder")
    parser.add_argument(
        "--blas-threads", type=_non_negative_int, default=1, help="OpenBLAS threads (tiny matrices: 1 is fastest; 0 leaves it)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_benchmark)


def cmd_relax(args: argparse.Namespace) -> int:
    """``sb3-crystal relax``: relax one structure, agent then classical finisher (or the agent alone); at fixed cell,
    or with ``--cell`` through an ASE cell filter.

    Every input and output is checked before the first step; the relaxed structure is written at the end, in one
    step; a trajectory of a run that fails is removed. Several inputs (or ``--out-dir``) make it a batch: see
    :func:`cmd_relax_batch`.
    """
    import warnings

    if len(args.structures) > 1 or args.out_dir is not None:
        if args.out_dir is None:
            raise UserError(f"{len(args.structures)} inputs: give --out-dir for their relaxed structures and summary")
        if args.trajectory is not None:
            raise UserError("--trajectory is for one structure; a batch writes one relaxed file per structure")
        args.inputs = args.structures
        return cmd_relax_batch(args)
    args.structure = args.structures[0]
    if args.model.lower() == LEARNED_CURVATURE:
        return _relax_learned_curvature(args)

    from sb3_crystal.relax import HybridOptimizer, RLOptimizer, check_agent_can_relax
    from sb3_crystal.relax.agent_io import CalculatorMismatchWarning

    atoms = read_one_structure(args.structure)
    check_relax_input(atoms, args.structure, args.input_min_distance)
    check_output_file(args.out, "--out", atoms)
    if args.trajectory is not None:
        check_trajectory_file(args.trajectory)
    agent = load_cli_agent(args.model, allow_pickle=args.allow_pickle)
    atoms.calc = make_cli_calculator(args.calculator)
    try:
        check_agent_can_relax(agent, atoms)  # unseen species, too many atoms for the agent, elements of the potential
    except (ValueError, TypeError) as err:
        raise UserError(f"{args.structure}: {err}") from None
    check_calculator_evaluates(atoms, args.calculator, args.structure)
    target = _cell_target(atoms, args)
    _warn_calculator_mismatch(agent, args.calculator)

    logfile = None if args.quiet else "-"
    trajectory = os.fspath(args.trajectory) if args.trajectory is not None else None

    def build() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalculatorMismatchWarning)  # said above, in one line
            if args.agent_only:
                return RLOptimizer(target, agent, logfile=logfile, trajectory=trajectory)
            return HybridOptimizer(
                target, agent, switch_fmax=args.switch_fmax, finisher=args.finisher, logfile=logfile, trajectory=trajectory
            )

    optimizer, converged = _run_and_write(build, atoms, target, args)
    if not args.agent_only:
        if optimizer.handover_reason:
            name = optimizer.finisher_class.__name__
            print(f"handover to {name}: after {optimizer.agent_steps} agent steps ({optimizer.handover_reason})")
        else:
            print(f"handover: none (the agent relaxed it in {optimizer.agent_steps} steps)")
    print(f"wrote {args.out}" + (f" and {args.trajectory}" if args.trajectory else ""))
    return 0 if converged else 1


def _run_and_write(build: Any, atoms: Any, target: Any, args: argparse.Namespace) -> tuple[Any, bool]:
    """Run the optimizer ``build()`` makes on ``target`` (``atoms`` or its cell filter), write ``atoms`` to ``--out``
    and print the result; a relaxer's own check of the input becomes a :class:`UserError`, and a failed run leaves no
    trajectory behind."""
    from sb3_crystal.structures.io import write_structure

    try:
        optimizer = build()
        with optimizer, blas_threads(1) if args.cell is not None else contextlib.nullcontext():
            converged = optimizer.run(fmax=args.fmax, steps=args.steps)  # the cell filter's 3×3 algebra: 1 thread
    except (ValueError, TypeError) as err:  # the relaxers' own checks of the agent and the structure
        _remove(args.trajectory)
        raise UserError(f"{args.structure}: {err}") from None
    except BaseException:
        _remove(args.trajectory)
        raise
    forces = target.get_forces()  # through a filter: forces and the cell's generalised forces, as converged
    fmax = float((forces**2).sum(axis=1).max() ** 0.5) if len(forces) else 0.0
    try:
        write_structure(atoms, args.out)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write '{args.out}': {err}") from err
    print(f"converged: {'yes' if converged else 'no'} (fmax {fmax:.4g} eV/Å, target {args.fmax:g})")
    print(f"force calls: {optimizer.force_calls}, steps: {optimizer.nsteps}, energy: {atoms.get_potential_energy():.6f} eV")
    if args.cell is not None:
        largest, volume = abs(atoms.get_stress()).max(), atoms.get_volume()
        print(f"cell ({args.cell} filter): largest stress component {largest:.3g} eV/Å³, volume {volume:.4f} Å³")
    return optimizer, bool(converged)


def _relax_learned_curvature(args: argparse.Namespace) -> int:
    """``relax --model learned-curvature``: :class:`~sb3_crystal.relax.LearnedCurvature` alone (no finisher), at fixed
    cell or through the ``--cell`` filter; the same checks before the first step as with an agent."""
    from sb3_crystal.relax import LearnedCurvature

    if args.hybrid or args.finisher != "auto":
        raise UserError(f"--model {LEARNED_CURVATURE} relaxes alone: --hybrid and --finisher do not apply")
    atoms = read_one_structure(args.structure)
    check_relax_input(atoms, args.structure, args.input_min_distance)
    unknown = sorted(set(atoms.get_chemical_symbols()) - {"Al", "Fe"})
    if unknown:
        raise UserError(f"{args.structure}: the learned curvature models Al–Fe only, not {', '.join(unknown)}")
    check_output_file(args.out, "--out", atoms)
    if args.trajectory is not None:
        check_trajectory_file(args.trajectory)
    atoms.calc = make_cli_calculator(args.calculator)
    check_calculator_evaluates(atoms, args.calculator, args.structure)
    target = _cell_target(atoms, args)
    logfile = None if args.quiet else "-"
    trajectory = os.fspath(args.trajectory) if args.trajectory is not None else None
    _, converged = _run_and_write(
        lambda: LearnedCurvature(target, logfile=logfile, trajectory=trajectory), atoms, target, args
    )
    print(f"wrote {args.out}" + (f" and {args.trajectory}" if args.trajectory else ""))
    return 0 if converged else 1


def _cell_target(atoms: Any, args: argparse.Namespace) -> Any:
    """What ``relax`` moves: the atoms, or with ``--cell`` the ASE filter around them (the stress checked first)."""
    if args.cell is None:
        return atoms
    from sb3_crystal.relax.filters import cell_filter, check_gives_stress

    try:
        check_gives_stress(atoms, args.calculator)
    except ValueError as err:
        raise UserError(f"{args.structure}: --cell: {err}") from None
    return cell_filter(args.cell)(atoms)


def _remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _add_relax(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relax",
        help="relax a structure (fixed cell, or --cell): a trained agent, then a classical finisher",
        description=(
            "Relax a structure at fixed cell (--cell: the cell too): the agent moves the atoms until fmax ≤ "
            "--switch-fmax (or it stalls), "
            "then the finisher, a classical optimizer (--finisher), converges (the hybrid, the dependable mode); "
            "several inputs (files, folders, globs, multi-frame files) with --out-dir relax as a resumable batch "
            "(--cell too); --agent-only lets the agent relax alone. Reads CIF, POSCAR, extended XYZ and whatever ASE "
            "or pymatgen read. Writes the relaxed structure (with energy and forces) and, if asked, the trajectory. "
            "Exit status 0 when converged, 1 when not, 2 on user errors (checked before the first step; nothing written)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "structures",
        nargs="+",
        metavar="STRUCTURE",
        help="a structure file (or a prototype name); with --out-dir, any number of files, folders or glob patterns",
    )
    _add_model_options(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--agent-only", action="store_true", help="the agent alone, no classical finisher")
    mode.add_argument("--hybrid", action="store_true", help="agent, then the finisher (the default; kept for scripts)")
    _add_hybrid_options(parser)
    parser.add_argument(
        "--input-min-distance",
        type=_non_negative_float,
        default=0.5,
        help="refuse a structure with two atoms closer than this, Å (the environment's input rule; 0 = no check)",
    )
    parser.add_argument("--out", type=Path, default=Path("relaxed.extxyz"), help="relaxed structure file")
    _add_cell_option(parser)
    parser.add_argument("--trajectory", type=Path, default=None, help="ASE trajectory of every step (a .traj file)")
    parser.add_argument("--quiet", action="store_true", help="no per-step log")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="batch: output folder of the relaxed structures and summary (resumable)"
    )
    _add_batch_options(parser)
    parser.set_defaults(func=cmd_relax)


# -- relax-batch: many structures, streamed to a folder, resumable (sb3_crystal.relax.batch_runner) -------------------
def cmd_relax_batch(args: argparse.Namespace) -> int:
    """``sb3-crystal relax-batch``: relax every structure of many inputs into an output folder; a rerun resumes."""
    from sb3_crystal.relax.batch import check_cell_setting
    from sb3_crystal.relax.batch_runner import run_batch

    if args.model.lower() == LEARNED_CURVATURE:
        raise UserError(f"--model {LEARNED_CURVATURE} relaxes one structure per call; a batch needs an agent")
    agent = load_cli_agent(args.model, allow_pickle=args.allow_pickle)  # a bad --model fails here, before any work
    make_cli_calculator(args.calculator)  # so does a bad --calculator
    try:
        check_cell_setting(agent, args.cell)  # a cell-aware agent relaxes through FrechetCellFilter only
    except ValueError as err:
        raise UserError(f"--model {args.model}: {err}") from None
    shipped = SHIPPED_MODEL_NAMES.get(args.model.lower())
    model = shipped[0] if shipped else args.model
    hybrid: Any = False if args.agent_only else {"switch_fmax": args.switch_fmax, "finisher": args.finisher}
    try:
        rows = run_batch(
            args.inputs,
            args.out_dir,
            model=model,
            fmax=args.fmax,
            steps=args.steps,
            calculator=args.calculator,
            hybrid=hybrid,
            workers=args.workers,
            ray_address=args.ray,
            batch_size=args.batch_size,
            retry_errors=args.retry_errors,
            allow_pickle=args.allow_pickle,
            progress=False if args.no_progress else None,
            cell=args.cell,
        )
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise UserError(str(err) if args.cell is None else f"--cell {args.cell}: {err}") from err
    converged = sum(bool(row["converged"]) for row in rows)
    errors = [row for row in rows if row["error"] is not None]
    print(
        f"{len(rows)} structure(s): {converged} converged, {len(rows) - converged - len(errors)} not converged, "
        f"{len(errors)} error(s); summary in {args.out_dir / 'summary.csv'}"
    )
    stresses = [row["max_stress"] for row in rows if row.get("max_stress") is not None]
    if args.cell is not None and stresses:
        print(f"cell ({args.cell} filter): largest stress component at the end ≤ {max(stresses):.3g} eV/Å³")
    for row in errors[:10]:
        print(f"  {row['source']}: {row['error']}", file=sys.stderr)
    return 0 if converged == len(rows) else 1


def _add_relax_batch(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relax-batch",
        help="relax many structures into an output folder (resumable, parallel, Ray)",
        description=(
            "Relax every structure of the inputs (structure files, folders, glob patterns, multi-frame extended XYZ, "
            "the dataset CSV) at fixed cell (--cell: the cell too, each structure through an ASE cell filter) with a "
            "trained agent then a classical finisher (--agent-only: the agent alone), in lockstep batches. Each "
            "result is written to "
            "--out-dir as it finishes (<name>.extxyz, summary.csv, summary.json, each atomically); rerunning the same "
            "command skips what is done. A bad input is reported in the summary and the others go on. Exit status 0 "
            "when every structure converged, 1 otherwise, 2 on user errors."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="structure files, folders or glob patterns")
    parser.add_argument("--out-dir", type=Path, required=True, help="output folder (rerun with it to resume)")
    _add_model_options(parser)
    parser.add_argument(
        "--agent-only", action="store_true", help="the agent alone, no classical finisher (default: the hybrid)"
    )
    _add_hybrid_options(parser)
    _add_cell_option(parser)
    _add_batch_options(parser)
    parser.set_defaults(func=cmd_relax_batch)


def _add_cell_option(parser: argparse.ArgumentParser) -> None:
    """``--cell [NAME]``, shared by ``relax`` and ``relax-batch``."""
    from sb3_crystal.relax.filters import CELL_FILTERS

    parser.add_argument(
        "--cell",
        nargs="?",
        const="frechet",
        default=None,
        choices=sorted(CELL_FILTERS),
        help="relax the cell too, through this ASE filter (alone: frechet, FrechetCellFilter; unit: UnitCellFilter; "
        "strain: StrainFilter, the cell alone); converged means every force and the filter's cell forces ≤ --fmax; "
        "the agent moves the atoms, L-BFGS the cell; the calculator must give the stress. In a batch each structure "
        "relaxes through its own filter, and the summary adds the filter's largest cell row, the largest stress "
        "component, the volume and the cell",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The agent and threshold options shared by ``relax`` and ``relax-batch``."""
    parser.add_argument(
        "--model",
        default="default",
        metavar="MODEL",
        help=f"{_SHIPPED_MODELS_HELP}; else an agent folder (weights only), or an SB3 zip with --allow-pickle; "
        f"'{LEARNED_CURVATURE}' (one structure, not a batch) = the learned-Hessian relaxer LearnedCurvature alone, no "
        "finisher (Al-Fe; with --cell it moves atoms and cell together through frechet)",
    )
    _add_allow_pickle_option(parser)
    parser.add_argument("--fmax", type=_positive_float, default=0.05, help="force threshold, eV/Å")
    parser.add_argument("--steps", type=_positive_int, default=200, help="step cap per structure")


def _add_hybrid_options(parser: argparse.ArgumentParser) -> None:
    """The hybrid's and the calculator's options shared by ``relax`` and ``relax-batch``."""
    parser.add_argument("--switch-fmax", type=_positive_float, default=0.1, help="hybrid handover threshold, eV/Å")
    parser.add_argument(
        "--finisher",
        type=_finisher_name,
        default=_FINISHERS[0],
        help=f"the hybrid's finisher, a classical optimizer ({', '.join(_FINISHERS)})",
    )
    parser.add_argument("--optimizer", dest="finisher", action=_RenamedOption, new="--finisher", type=_finisher_name)
    _add_calculator_option(parser)


def _add_allow_pickle_option(parser: argparse.ArgumentParser) -> None:
    """``--allow-pickle``, shared by ``benchmark``, ``relax`` and ``relax-batch``."""
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let --model load SB3 zips, which unpickles them and so runs any code stored in them: trusted files only "
        "(sb3-crystal convert makes a weights-only agent folder of one)",
    )


def _add_calculator_option(parser: argparse.ArgumentParser) -> None:
    """``--calculator``, shared by ``benchmark``, ``relax`` and ``relax-batch``."""
    parser.add_argument("--calculator", default="lammps", help="calculator spec: lammps, matscipy, emt, module:Class")


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    """The batch options shared by ``relax`` (with --out-dir) and ``relax-batch``."""
    parser.add_argument("--workers", type=_positive_int, default=1, help="batch: parallel worker processes (or Ray actors)")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="batch: run on Ray: alone, a local cluster started here; 'auto' or an address joins a running cluster",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="batch: structures per lockstep batch")
    parser.add_argument("--retry-errors", action="store_true", help="batch: run again the jobs that ended in an error")
    parser.add_argument("--no-progress", action="store_true", help="batch: no progress bar")


def cmd_convert(args: argparse.Namespace) -> int:
    """``sb3-crystal convert``: an SB3 zip (unpickled: the user asks for it by running this) → a weights-only agent
    folder, written in one step (a temporary folder beside it, renamed)."""
    from sb3_crystal.relax.agent_io import AgentFormatError, load_agent, save_agent

    destination: Path = args.destination
    where = f"destination {os.fspath(destination)}"
    if destination.exists() and not (destination.is_dir() and not any(destination.iterdir())):
        raise UserError(f"{where}: already exists (give a new folder, or an empty one)")
    if not destination.parent.is_dir():
        raise UserError(f"{where}: the folder {os.fspath(destination.parent)} does not exist")
    agent = load_cli_agent(args.source, allow_pickle=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    except OSError as err:
        raise UserError(f"{where}: cannot write in {os.fspath(destination.parent)} ({err.strerror or err})") from None
    try:
        save_agent(agent, staging)
        load_agent(staging)  # it loads without unpickling code
        if destination.is_dir():
            destination.rmdir()
        os.replace(staging, destination)
    except (AgentFormatError, ValueError, OSError) as err:
        raise UserError(f"cannot convert '{args.source}': {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    species = ", ".join(agent.species) if agent.species else "unknown"
    print(
        f"wrote {os.fspath(destination)} (settings.json, weights.pt: loads without --allow-pickle); "
        f"{agent.algorithm}, {type(agent.policy).__name__}, species {species}, calculator {agent.calculator or 'unknown'}"
    )
    return 0


def _add_convert(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an SB3 model zip into a weights-only agent folder",
        description=(
            "Load an SB3 TD3/SAC model zip and write it as an agent folder (settings.json, plain data, and weights.pt, "
            "tensors only), which loads without unpickling anything. Loading the zip unpickles it, which runs any "
            "code stored in it: running this command is the permission to do so, once; convert only files you trust "
            "and share the folder."
        ),
    )
    parser.add_argument("source", metavar="MODEL_ZIP", help="SB3 model zip (or an agent folder, written again)")
    parser.add_argument("destination", type=Path, metavar="AGENT_FOLDER", help="new (or empty) folder")
    parser.set_defaults(func=cmd_convert)


def cmd_train(args: argparse.Namespace) -> int:
    """``sb3-crystal train``: rl-zoo style training (the same as ``python train.py``)."""
    try:
        from sb3_crystal.training import train
    except ImportError as err:
        raise UserError(f"training needs rl-zoo3 (pip install 'sb3-crystal[zoo]'): {err}") from err
    try:
        train(args.zoo_args)
    except SystemExit as exit_:  # rl-zoo's own argument errors and --help
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except (ValueError, FileNotFoundError, AssertionError) as err:
        raise UserError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from err
    return 0


def _add_train(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        add_help=False,
        help="train an agent (rl-zoo flags; see sb3-crystal train --help)",
        description="rl-zoo style training: the flags are rl-zoo's train.py flags plus --n-envs.",
    )
    parser.add_argument("zoo_args", nargs=argparse.REMAINDER, help="rl-zoo arguments, e.g. --algo td3 --env CrystalRelax-v0")
    parser.set_defaults(func=cmd_train)


def cmd_dataset(args: argparse.Namespace) -> int:
    """``sb3-crystal dataset``: build prototype sets, generate random Al–Fe sets, pre-relax and inspect structures."""
    from sb3_crystal.structures.io import write_structure

    if args.action == "random":
        from sb3_crystal.structures.random import random_dataset

        low, _, high = args.atoms.partition("-")
        if not (low.isdigit() and (high.isdigit() or not high)):
            raise UserError(f"--atoms must be N or LO-HI (e.g. 2-3), got '{args.atoms}'")
        try:
            n_atoms: int | tuple[int, int] = (int(low), int(high)) if high else int(low)
            structures = random_dataset(args.count, n_atoms, seed=args.seed)
        except ValueError as err:
            raise UserError(str(err)) from err
    else:
        if not args.structures:
            raise UserError(
                f"dataset {args.action} needs structures: prototype names or structure files (e.g. AlFe-B2 cells.cif)"
            )
        structures = _load_structures(args.structures)
    if args.out is not None:
        check_output_file(args.out, "--out", structures)
    if args.action in ("relax", "inspect"):
        from sb3_crystal.structures.geometry import closest_pair
        from sb3_crystal.structures.minima import relaxed_minimum

        relaxed = []
        iterator = _progress(structures, "relaxing", args.quiet)
        for atoms in iterator:
            try:
                minimum, report = relaxed_minimum(atoms, args.calculator, fmax=args.relax_fmax)
            except (ValueError, RuntimeError) as err:
                raise UserError(f"{atoms.info.get('source')}: {err}") from err
            print(f"{_describe_minimum(report)}; closest pair {closest_pair(minimum, 6.0)[2]:.3f} Å")
            minimum.info.pop("minimum", None)  # the report object: its fields go in as plain values
            minimum.info["source"] = report.source
            minimum.info["is_minimum"] = report.is_minimum
            minimum.info["lowest_hessian_eigenvalue"] = report.lowest_eigenvalue
            relaxed.append(minimum)
        structures = relaxed
    if args.out is not None:
        try:
            write_structure(structures, args.out)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot write {args.out}: {err}") from err
        print(f"wrote {len(structures)} structure(s) to {args.out}")
    elif args.action in ("build", "random"):
        for atoms in structures:
            print(f"{atoms.info.get('source')}: {atoms.get_chemical_formula()}, {len(atoms)} atoms")
    return 0


def _progress(items: Sequence[Any], label: str, quiet: bool) -> Any:
    if quiet or len(items) < 3:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, file=sys.stderr)


def _add_dataset(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="build, generate, pre-relax or inspect structure sets",
        description=(
            "build: prototypes or files into one extxyz file; random: random symmetric Al–Fe crystals (pyxtal); "
            "relax: fixed-cell pre-relaxation (cached) with a minimum/saddle report; inspect: the same report only."
        ),
    )
    parser.add_argument("action", choices=["build", "random", "relax", "inspect"])
    parser.add_argument("structures", nargs="*", default=[], help="prototype names or structure files (build/relax/inspect)")
    parser.add_argument("--count", type=_positive_int, default=20, help="random: number of structures (default 20)")
    parser.add_argument("--atoms", default="2-3", help="random: atoms per cell, N or LO-HI (default 2-3)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random: seed (default 0)")
    parser.add_argument("--calculator", default="lammps", help="relax/inspect: calculator spec (default lammps)")
    parser.add_argument("--relax-fmax", type=_positive_float, default=1e-3, help="relax/inspect: threshold, eV/Å")
    parser.add_argument("--out", type=Path, default=None, help="write the structures here (extxyz, CIF, POSCAR)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_dataset)


def build_parser() -> _Parser:
    """The ``sb3-crystal`` parser; each subcommand sets ``func`` (its ``cmd_*`` function)."""
    from sb3_crystal import __version__

    parser = _Parser(prog="sb3-crystal", description="Deep-RL relaxation of crystal structures at fixed cell.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_benchmark(subparsers)
    _add_relax(subparsers)
    _add_relax_batch(subparsers)
    _add_convert(subparsers)
    _add_train(subparsers)
    _add_dataset(subparsers)
    parser.commands = tuple(subparsers.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    :param argv: arguments without the program name; ``None`` reads ``sys.argv``.
    :return: exit status (0 success, 2 user error).
    """
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["train"]:  # everything after "train" is rl-zoo's, --help included
        args = argparse.Namespace(command="train", func=cmd_train, zoo_args=arguments[1:])
        return _run(parser, args)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit_:  # --help, --version and parse errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if getattr(args, "func", None) is None:
        print(
            f"{parser.prog}: error: give a command ({', '.join(parser.commands)}); see {parser.prog} --help", file=sys.stderr
        )
        return 2
    return _run(parser, args)


def _run(parser: _Parser, args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except UserError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

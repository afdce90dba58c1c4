"""The ``sb3-crystal`` command line: one function per subcommand (``benchmark``, ``relax``, ``train``, ``dataset``).

User errors (an unknown prototype or optimizer, a missing file, a bad number) print one line on stderr and exit
with status 2; ``--help`` works on every subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["UserError", "blas_threads", "build_parser", "main"]


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


def _optimizer_name(text: str) -> str:
    from sb3_crystal.benchmark.classical import make_relaxer

    try:
        return make_relaxer(text).name
    except KeyError as err:
        raise argparse.ArgumentTypeError(str(err.args[0])) from None


# -- helpers ------------------------------------------------------------------------------------------------------
_OPENBLAS_THREAD_CALLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@contextlib.contextmanager
def blas_threads(n_threads: int = 1) -> Iterator[int]:
    """Run a block with the OpenBLAS libraries loaded in this process set to ``n_threads`` (best effort, Linux).

    The benchmark's matrices are tiny (GPMin's surrogate model, BFGS's Hessian of a few atoms): extra BLAS
    threads only spin, and make GPMin several times slower on a 2-core machine. ``OPENBLAS_NUM_THREADS`` would
    have to be set before NumPy is imported, which importing this package already does. The previous thread
    counts are restored on exit.

    :param n_threads: threads per library.
    :return: (as the ``with`` target) how many libraries were adjusted.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:
        paths = set()
    previous: list[tuple[Any, int]] = []
    for path in sorted(paths):
        try:
            handle = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_THREAD_CALLS:
            getter, setter = getattr(handle, get_name, None), getattr(handle, set_name, None)
            if getter is not None and setter is not None:
                previous.append((setter, int(getter())))
                setter(ctypes.c_int(int(n_threads)))
                break
    try:
        yield len(previous)
    finally:
        for setter, count in previous:
            setter(ctypes.c_int(count))


def _load_structures(names: Sequence[str]) -> list[Any]:
    """Prototype names or structure files → unrelaxed ``Atoms`` with ``info["source"]`` (1-atom cells made 2×1×1)."""
    from sb3_crystal.structures.dataset import load_structures, with_two_atoms_at_least
    from sb3_crystal.structures.prototypes import PROTOTYPES

    structures = []
    for name in names:
        try:
            found = load_structures(name)
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
    from sb3_crystal.benchmark.harness import format_table, run_benchmark, summarize, write_results
    from sb3_crystal.calculators import PotentialNotFoundError, UnsupportedElementsError, make_calculator
    from sb3_crystal.structures.minima import RelaxationError, relaxed_minimum

    t0 = time.perf_counter()
    structures = _load_structures(args.structures)
    try:
        calculator = make_calculator(args.calculator)
    except (ValueError, TypeError, ImportError, PotentialNotFoundError) as err:
        raise UserError(f"calculator '{args.calculator}': {err}") from err
    minima = []
    for atoms in structures:
        try:
            minimum, report = relaxed_minimum(atoms, calculator)
        except (UnsupportedElementsError, RelaxationError) as err:
            raise UserError(f"{atoms.info['source']}: {err}") from err
        minimum.info["source"] = atoms.info["source"]
        print(_describe_minimum(report), flush=True)
        minima.append(minimum)
    relaxers: list[Any] = list(dict.fromkeys(args.optimizers))  # "BFGS bfgs" is one optimizer
    relaxers += _agent_relaxers(args)
    rows = run_benchmark(
        minima,
        optimizers=relaxers,
        beta=args.beta,
        fmaxes=args.fmax,
        n_starts=args.n_starts,
        seed=args.seed,
        calculator=calculator,
        max_steps=args.max_steps,
        min_distance=args.min_distance,
        progress=False if args.no_progress else None,
    )
    title = f"β = {args.beta:g} Å, {args.n_starts} starts (seed {args.seed}), calculator {args.calculator}"
    paths = write_results(rows, args.out, title=f"Force calls to reach ε: {title}")
    print(f"\nForce calls to reach ε ({title}; statistics over converged runs):\n")
    print(format_table(summarize(rows)))
    print(f"\nWrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.1f} s")
    return 0


#: ``--model`` names of the shipped agents -> (name in agent_io.SHIPPED_AGENTS, relaxer label)
SHIPPED_MODEL_NAMES = {"default": ("alfe", "RL"), "b2": ("b2", "RL-B2")}


def _model_names(args: argparse.Namespace) -> list[str]:
    """``--model`` resolved: ``auto`` is the shipped Al–Fe agent, plus the shipped B2 specialist on the default case."""
    if "none" in args.model:
        return []
    auto = ["default", "b2"] if args.structures == ["AlFe-B2"] else ["default"]
    names = [resolved for name in args.model for resolved in (auto if name == "auto" else [name])]
    return list(dict.fromkeys(names))


def _agent_relaxers(args: argparse.Namespace) -> list[Any]:
    """The agent alone and the hybrid for each ``--model`` (shipped agents that are not installed are skipped)."""
    from sb3_crystal.benchmark.agents import AgentRelaxer, HybridRelaxer
    from sb3_crystal.relax.agent_io import AgentFormatError, NoDefaultAgentError, load_model, load_shipped_agent

    relaxers: list[Any] = []
    names = _model_names(args)
    for k, name in enumerate(names):
        shipped = SHIPPED_MODEL_NAMES.get(name)
        label = shipped[1] if shipped else ("RL" if len(names) == 1 else f"RL-{k + 1}")
        try:
            agent = load_shipped_agent(shipped[0]) if shipped else load_model(name)
        except NoDefaultAgentError:
            print(f"The shipped agent '{name}' is not installed: skipped (give one with --model PATH).", flush=True)
            continue
        except (AgentFormatError, OSError, ValueError) as err:
            raise UserError(f"cannot load the agent '{name}': {err}") from err
        relaxers += [
            AgentRelaxer(agent, name=label),
            *(
                HybridRelaxer(agent, f_switch=args.switch_fmax, optimizer=opt, name=f"{label}+{opt}@{args.switch_fmax:g}")
                for opt in args.hybrid_optimizers
            ),
        ]
    if not relaxers:
        print("No trained agent: classical optimizers only.", flush=True)
    return relaxers


# sb3_crystal.relax.optimizer.CLASSICAL_OPTIMIZERS, its DEFAULT_FINISHER first, spelled out: importing it (torch)
# slows --help
_HYBRID_OPTIMIZERS = ("auto", "BFGSLineSearch", "BFGS", "LBFGS", "FIRE", "GPMin", "GPMinFitted")


def _hybrid_optimizer_name(text: str) -> str:
    lookup = {name.lower(): name for name in _HYBRID_OPTIMIZERS}
    if text.lower() not in lookup:
        raise argparse.ArgumentTypeError(f"unknown optimizer '{text}': choose from {', '.join(_HYBRID_OPTIMIZERS)}")
    return lookup[text.lower()]


def _add_benchmark(subparsers: Any) -> None:
    from sb3_crystal.benchmark.classical import DEFAULT_OPTIMIZERS

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
    parser.add_argument("--beta", type=_non_negative_float, default=0.5, help="distortion β in Å (coordinates += β·U(−1,1))")
    parser.add_argument(
        "--fmax", type=_positive_float, nargs="+", default=[0.1, 0.05, 0.01], metavar="EPS", help="force thresholds ε, eV/Å"
    )
    parser.add_argument("--n-starts", type=_positive_int, default=20, help="distorted starts per structure")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="start k uses numpy default_rng(seed + k)")
    parser.add_argument(
        "--optimizers", type=_optimizer_name, nargs="+", default=list(DEFAULT_OPTIMIZERS), metavar="NAME", help="relaxers"
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["auto"],
        metavar="MODEL",
        help="trained agents (folders or SB3 zips), each run alone (RL) and as a hybrid; 'default' = the "
        "shipped Al-Fe agent, 'b2' = the shipped B2 AlFe specialist, 'auto' = 'default', plus 'b2' when the structure "
        "is the default AlFe-B2; 'none' = classical optimizers only",
    )
    parser.add_argument("--switch-fmax", type=_positive_float, default=0.1, help="hybrid: agent until fmax ≤ this, eV/Å")
    parser.add_argument(
        "--hybrid-optimizers",
        type=_hybrid_optimizer_name,
        nargs="+",
        default=[_HYBRID_OPTIMIZERS[0]],
        metavar="NAME",
        help=f"classical optimizers finishing the hybrid, one hybrid each ({', '.join(_HYBRID_OPTIMIZERS)})",
    )
    parser.add_argument("--calculator", default="lammps", help="calculator spec: lammps, matscipy, emt, module:Class")
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


def _read_one_structure(name: str) -> Any:
    """A structure file of one structure (or a prototype name) → ``Atoms``."""
    from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype

    prototypes = {key.lower(): key for key in PROTOTYPES}
    if not os.path.isfile(name):
        if name.lower() in prototypes:
            return build_prototype(prototypes[name.lower()])
        raise UserError(f"no structure file '{name}' (nor a prototype: {', '.join(PROTOTYPES)})")
    from sb3_crystal.structures.io import read_structures

    try:
        found = list(read_structures(name))
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot read structures from '{name}': {err}") from err
    if len(found) != 1:
        raise UserError(f"'{name}' holds {len(found)} structures; relax takes a file of one structure")
    return found[0]


def cmd_relax(args: argparse.Namespace) -> int:
    """``sb3-crystal relax``: relax one structure at fixed cell with a trained agent (optionally + a classical optimizer)."""
    from sb3_crystal.calculators import PotentialNotFoundError, make_calculator
    from sb3_crystal.relax import AgentFormatError, HybridOptimizer, RLOptimizer, load_model
    from sb3_crystal.relax.agent_io import NoDefaultAgentError, load_shipped_agent
    from sb3_crystal.structures.io import write_structure

    atoms = _read_one_structure(args.structure)
    shipped = None if os.path.exists(args.model) else SHIPPED_MODEL_NAMES.get(args.model.lower())
    try:
        agent = load_shipped_agent(shipped[0]) if shipped else load_model(args.model)
    except (OSError, AgentFormatError, NoDefaultAgentError) as err:
        raise UserError(f"model '{args.model}': {err}") from err
    try:
        atoms.calc = make_calculator(args.calculator)
    except (ValueError, TypeError, ImportError, PotentialNotFoundError) as err:
        raise UserError(f"calculator '{args.calculator}': {err}") from err
    logfile = None if args.quiet else "-"
    trajectory = str(args.trajectory) if args.trajectory else None
    try:
        if args.hybrid:
            optimizer: Any = HybridOptimizer(
                atoms, agent, f_switch=args.switch_fmax, optimizer=args.optimizer, logfile=logfile, trajectory=trajectory
            )
        else:
            optimizer = RLOptimizer(atoms, agent, logfile=logfile, trajectory=trajectory)
    except (ValueError, TypeError) as err:  # unseen species, too many atoms for the agent, non-periodic cell
        raise UserError(str(err)) from err
    with optimizer:
        converged = optimizer.run(fmax=args.fmax, steps=args.steps)
    forces = atoms.get_forces()
    fmax = float((forces**2).sum(axis=1).max() ** 0.5) if len(forces) else 0.0
    try:
        write_structure(atoms, args.out)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write '{args.out}': {err}") from err
    print(f"converged: {'yes' if converged else 'no'} (fmax {fmax:.4g} eV/Å, target {args.fmax:g})")
    print(f"force calls: {optimizer.force_calls}, steps: {optimizer.nsteps}, energy: {atoms.get_potential_energy():.6f} eV")
    if args.hybrid:
        if optimizer.handover_reason:
            name = optimizer.optimizer_class.__name__
            print(f"handover to {name}: after {optimizer.agent_steps} agent steps ({optimizer.handover_reason})")
        else:
            print(f"handover: none (the agent relaxed it in {optimizer.agent_steps} steps)")
    print(f"wrote {args.out}" + (f" and {args.trajectory}" if args.trajectory else ""))
    return 0 if converged else 1


def _add_relax(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relax",
        help="relax a structure at fixed cell with a trained agent",
        description=(
            "Relax one structure at fixed cell with a trained agent (an SB3 TD3/SAC .zip, which is unpickled: only "
            "trusted files; or an agent folder with settings.json and weights.pt). With --hybrid the agent hands over "
            "to a classical optimizer at --switch-fmax. Writes the relaxed structure (with energy and forces) and, "
            "if asked, the trajectory. Exit status 0 when converged, 1 when not, 2 on user errors."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("structure", metavar="STRUCTURE_FILE", help="structure file of one structure (or a prototype name)")
    parser.add_argument(
        "--model",
        default="default",
        metavar="PATH",
        help="SB3 model .zip or agent folder; 'default' = the shipped Al-Fe agent, 'b2' = the shipped B2 AlFe specialist",
    )
    parser.add_argument("--fmax", type=_positive_float, default=0.05, help="force threshold, eV/Å")
    parser.add_argument("--steps", type=_positive_int, default=200, help="step cap")
    parser.add_argument("--hybrid", action="store_true", help="agent first, then a classical optimizer")
    parser.add_argument("--switch-fmax", type=_positive_float, default=0.1, help="hybrid handover threshold, eV/Å")
    parser.add_argument(
        "--optimizer",
        type=_hybrid_optimizer_name,
        default=_HYBRID_OPTIMIZERS[0],
        help=f"classical optimizer of the hybrid ({', '.join(_HYBRID_OPTIMIZERS)})",
    )
    parser.add_argument("--calculator", default="lammps", help="calculator spec: lammps, matscipy, emt, module:Class")
    parser.add_argument("--out", type=Path, default=Path("relaxed.extxyz"), help="relaxed structure file")
    parser.add_argument("--trajectory", type=Path, default=None, help="ASE trajectory file of every step")
    parser.add_argument("--quiet", action="store_true", help="no per-step log")
    parser.set_defaults(func=cmd_relax)


# -- relax-batch: many structures, streamed to a folder, resumable (sb3_crystal.relax.batch_runner) -------------------
def cmd_relax_batch(args: argparse.Namespace) -> int:
    """``sb3-crystal relax-batch``: relax every structure of many inputs into an output folder; a rerun resumes."""
    from sb3_crystal.relax.batch_runner import run_batch

    shipped = None if os.path.exists(args.model) else SHIPPED_MODEL_NAMES.get(args.model.lower())
    model = shipped[0] if shipped else args.model
    hybrid: Any = {"f_switch": args.switch_fmax, "optimizer": args.optimizer} if args.hybrid else False
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
            progress=False if args.no_progress else None,
        )
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise UserError(str(err)) from err
    converged = sum(bool(row["converged"]) for row in rows)
    errors = [row for row in rows if row["error"] is not None]
    print(
        f"{len(rows)} structure(s): {converged} converged, {len(rows) - converged - len(errors)} not converged, "
        f"{len(errors)} error(s); summary in {args.out_dir / 'summary.csv'}"
    )
    for row in errors[:10]:
        print(f"  {row['source']}: {row['error']}", file=sys.stderr)
    return 0 if converged == len(rows) else 1


def _add_relax_batch(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relax-batch",
        help="relax many structures into an output folder (resumable, parallel, Ray)",
        description=(
            "Relax every structure of the inputs (structure files, folders, glob patterns, multi-frame extended XYZ, "
            "the dataset CSV) at fixed cell with a trained agent, in lockstep batches. Each result is written to "
            "--out-dir as it finishes (<name>.extxyz, summary.csv, summary.json, each atomically); rerunning the same "
            "command skips what is done. A bad input is reported in the summary and the others go on. Exit status 0 "
            "when every structure converged, 1 otherwise, 2 on user errors."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="structure files, folders or glob patterns")
    parser.add_argument("--out-dir", type=Path, required=True, help="output folder (rerun with it to resume)")
    parser.add_argument(
        "--model",
        default="default",
        metavar="PATH",
        help="SB3 model .zip or agent folder; 'default' = the shipped Al-Fe agent, 'b2' = the shipped B2 AlFe specialist",
    )
    parser.add_argument("--fmax", type=_positive_float, default=0.05, help="force threshold, eV/Å")
    parser.add_argument("--steps", type=_positive_int, default=200, help="step cap per structure")
    parser.add_argument("--hybrid", action="store_true", help="agent first, then a classical optimizer")
    parser.add_argument("--switch-fmax", type=_positive_float, default=0.1, help="hybrid handover threshold, eV/Å")
    parser.add_argument(
        "--optimizer",
        type=_hybrid_optimizer_name,
        default=_HYBRID_OPTIMIZERS[0],
        help=f"classical optimizer of the hybrid ({', '.join(_HYBRID_OPTIMIZERS)})",
    )
    parser.add_argument("--calculator", default="lammps", help="calculator spec: lammps, matscipy, emt, module:Class")
    parser.add_argument("--workers", type=_positive_int, default=1, help="parallel worker processes (or Ray actors)")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: alone, a local cluster started here; 'auto' or an address joins a running cluster",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="structures per lockstep batch")
    parser.add_argument("--retry-errors", action="store_true", help="run again the jobs that ended in an error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_relax_batch)


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
        structures = _load_structures(args.structures)
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

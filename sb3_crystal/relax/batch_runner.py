"""A batch of relaxations that never loses work: results stream to an output folder, a rerun resumes.

::

    run_batch(["cells/", "more/*.cif", "frames.extxyz"], "relaxed", model="alfe", workers=2)

The inputs are structure files, folders (their structure files), glob patterns, multi-frame extended XYZ files and
the dataset CSV (every structure file :func:`~sb3_crystal.structures.io.read_structures` reads). Each structure
(each frame, each CSV row) is one job with a stable name; its result goes to the output folder as it finishes:

- ``<name>.extxyz``: the relaxed structure with its energy and forces (with ``cell``: its relaxed cell and stress);
- ``.records/<name>.json``: the job's summary (force calls, converged, final fmax, energy, steps, wall time, stop
  reason, error; with ``cell`` also the filter, its largest cell row, the largest stress component, the volume and
  the cell's lengths and angles), the mark that the job is done;
- ``summary.csv`` and ``summary.json``: every finished job in input order, refreshed as jobs finish.

Each file is written atomically (a temporary file, then ``os.replace``), so a killed run leaves only whole files;
running the same command again skips every job that has a record, and refuses an output folder that holds the
results of different settings. An input that cannot be read, or a structure the agent cannot relax, is a job with
an error in the summary; the others go on.

Relaxations run in lockstep batches (:func:`~sb3_crystal.relax.batch.relax_many`) in this process, in ``workers``
processes of this machine (each with its own agent and calculator), or over a Ray cluster (``ray_address``). With
``cell`` (``"frechet"``, ``"unit"``, ``"strain"``) each structure relaxes through that ASE cell filter, as
``sb3-crystal relax --cell`` relaxes one.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ase import Atoms

from sb3_crystal.files import atomic_file
from sb3_crystal.relax.filters import cell_filter, check_gives_stress
from sb3_crystal.structures.io import StructureFileError, read_structures, write_structure

__all__ = ["SUMMARY_FIELDS", "BatchJob", "collect_jobs", "run_batch"]

#: Columns of ``summary.csv`` (and keys of each entry of ``summary.json``).
SUMMARY_FIELDS = (
    "name",
    "source",
    "output",
    "converged",
    "force_calls",
    "fmax",
    "energy",
    "steps",
    "wall_time",
    "stop_reason",
    "handover",
    "error",
    "cell_filter",
    "cell_fmax",
    "max_stress",
    "volume",
    "cellpar",
)
RECORDS_DIR = ".records"
SETTINGS_FILE = "run.json"
#: Names of structure files in a folder input (as :func:`read_structures` recognises them).
_STRUCTURE_FILE = re.compile(r"(\.(cif|csv|extxyz|xyz|vasp|poscar)$)|(^(poscar|contcar))", re.IGNORECASE)
_GLOB_CHARACTERS = set("*?[")


@dataclass
class BatchJob:
    """One structure of the batch.

    :param name: stable, unique name: the output file is ``<name>.extxyz``.
    :param source: where the structure came from (``"<file>"`` or ``"<file>:<k>"``).
    :param atoms: the structure (``None`` when its file could not be read).
    :param error: why the file could not be read.
    """

    name: str
    source: str
    atoms: Atoms | None = None
    error: str | None = None


# -- inputs -------------------------------------------------------------------------------------------------------------
def _expand(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Structure files named by files, folders and glob patterns, in the order given (each file once).

    :raises FileNotFoundError: an input that is no file or folder and a pattern matching nothing (before any work).
    """
    files: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(p for p in Path(text).iterdir() if p.is_file() and _STRUCTURE_FILE.search(p.name))
            if not found:
                raise FileNotFoundError(f"{text}: the folder holds no structure file (CIF, POSCAR, extended XYZ, CSV)")
            files += found
        elif os.path.isfile(text):
            files.append(Path(text))
        elif _GLOB_CHARACTERS & set(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"{text}: no file matches this pattern")
            files += found
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "structure"


def collect_jobs(inputs: Iterable[str | os.PathLike]) -> list[BatchJob]:
    """The jobs of a batch: one per structure of the input files, in order, with stable unique names.

    A file that cannot be read becomes one job holding the error. A name is the file's stem (``_<k>`` added for the
    structures of a file of several: the frame number, or the CSV index); names two inputs would share get a short
    hash of the file's full path.

    :param inputs: structure files, folders, glob patterns.
    :raises FileNotFoundError: a missing file or folder, a pattern matching nothing.
    """
    files = _expand(inputs)
    raw: list[tuple[Path, BatchJob]] = []
    for file in files:
        label = os.fspath(file)
        try:
            structures = read_structures(file)
        except (StructureFileError, OSError, ValueError) as err:
            raw.append((file, BatchJob(_safe(file.stem), label, error=f"{type(err).__name__}: {err}")))
            continue
        for atoms in structures:
            source = str(atoms.info.get("source", label))
            suffix = source[len(label) + 1 :] if len(structures) > 1 and source.startswith(label + ":") else ""
            name = _safe(file.stem + (f"_{suffix}" if suffix else ""))
            raw.append((file, BatchJob(name, source, atoms)))
    counts: dict[str, set[Path]] = {}
    for file, job in raw:
        counts.setdefault(job.name, set()).add(file.resolve())
    jobs = []
    for file, job in raw:
        if len(counts[job.name]) > 1:
            digest = hashlib.blake2b(os.fspath(file.resolve()).encode(), digest_size=3).hexdigest()
            job.name = f"{job.name}-{digest}"
        jobs.append(job)
    seen: set[str] = set()
    for job in jobs:  # a name still shared (e.g. "a_1" from a.extxyz frame 1 and from a_1.cif in one folder)
        base, k = job.name, 1
        while job.name in seen:
            job.name, k = f"{base}-{k}", k + 1
        seen.add(job.name)
    return jobs


# -- atomic files -------------------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _plain(value: Any) -> Any:
    """JSON-safe scalars (NaN as ``None``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def _csv_value(value: Any) -> Any:
    """A summary value as a CSV cell: ``None`` empty, a list (``cellpar``) its numbers separated by spaces."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(map(repr, value))
    return value


class _Output:
    """The output folder: records of finished jobs, relaxed structures, the summary."""

    def __init__(self, folder: Path, jobs: Sequence[BatchJob], settings: Mapping[str, Any], summary_every: float) -> None:
        self.folder, self.jobs = folder, jobs
        self.records_dir = folder / RECORDS_DIR
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self._check_settings(dict(settings))
        self.records: dict[str, dict[str, Any]] = {}
        names = {job.name for job in jobs}
        for path in self.records_dir.glob("*.json"):
            name = path.stem
            if name not in names:
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # unreadable: the job runs again
            if record.get("error") is None and not (folder / str(record.get("output"))).is_file():
                continue  # the structure file is gone: run again
            self.records[name] = record
        self.summary_every = summary_every
        self._last_summary = -math.inf

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.folder / SETTINGS_FILE
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                previous = None
            if previous is not None and previous != settings:
                changed = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
                details = ", ".join(f"{key}: {previous.get(key)!r} there, {settings.get(key)!r} now" for key in changed)
                raise ValueError(
                    f"{self.folder} holds the results of a batch with other settings ({details}): "
                    "use another output folder, or the same settings to resume"
                )
        _write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")

    def done(self, job: BatchJob, retry_errors: bool) -> bool:
        record = self.records.get(job.name)
        return record is not None and not (retry_errors and record.get("error") is not None)

    def record(self, job: BatchJob, summary: Mapping[str, Any], atoms: Atoms | None) -> None:
        """Store one finished job: its structure file first, then its record (the mark that it is done)."""
        output = None
        if atoms is not None and summary.get("error") is None:
            output = f"{job.name}.extxyz"
            atoms = atoms.copy() if atoms.calc is None else atoms
            atoms.info.update(
                {"source": job.source, "converged": bool(summary["converged"]), "force_calls": int(summary["force_calls"])}
            )
            write_structure(atoms, self.folder / output)
        record = {field: _plain(summary.get(field)) for field in SUMMARY_FIELDS}
        record.update(name=job.name, source=job.source, output=output)
        _write_text(self.records_dir / f"{job.name}.json", json.dumps(record, indent=1) + "\n")
        self.records[job.name] = record
        if time.monotonic() - self._last_summary >= self.summary_every:
            self.write_summary()

    def rows(self) -> list[dict[str, Any]]:
        return [self.records[job.name] for job in self.jobs if job.name in self.records]

    def write_summary(self) -> None:
        rows = self.rows()
        _write_text(self.folder / "summary.json", json.dumps(rows, indent=1) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_value(row.get(key)) for key in SUMMARY_FIELDS} for row in rows)
        _write_text(self.folder / "summary.csv", buffer.getvalue())
        self._last_summary = time.monotonic()


# -- agents and workers ---------------------------------------------------------------------------------------------
def _describe_model(model: Any) -> str:
    if model is None:
        return "shipped:alfe"
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        return os.path.abspath(text) if os.path.exists(text) else f"shipped:{_shipped_name(text)}"
    return type(model).__name__


def _shipped_name(text: str) -> str:
    from sb3_crystal.relax.agent_io import SHIPPED_AGENTS

    name = {"default": "alfe"}.get(text.lower(), text.lower())
    if name not in SHIPPED_AGENTS:
        raise FileNotFoundError(
            f"model '{text}': no such agent folder or SB3 zip, nor a shipped agent ({', '.join(SHIPPED_AGENTS)})"
        )
    return name


def load_batch_agent(model: Any, allow_pickle: bool = False) -> Any:
    """The agent of a batch: ``None`` (the shipped Al–Fe agent), an agent folder, an SB3 zip (with ``allow_pickle``:
    loading one unpickles it), the name of a shipped agent (``"alfe"``/``"default"``, ``"b2"``), or a model/agent
    object."""
    from sb3_crystal.relax.agent_io import as_agent, load_default_agent, load_model, load_shipped_agent

    if model is None:
        return load_default_agent()
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if os.path.exists(text):
            return load_model(text, allow_pickle=allow_pickle)
        return load_shipped_agent(_shipped_name(text))
    return as_agent(model)


class _Relaxer:
    """What a worker holds: its agent and calculator, built once; relaxes chunks of structures.

    :param agent: the agent already loaded from ``model`` (in this process), else ``None``: loaded here.
    """

    def __init__(
        self, model: Any, calculator: Any, threads: int | None, allow_pickle: bool = False, agent: Any = None
    ) -> None:
        if threads:
            import torch as th

            th.set_num_threads(threads)
        from sb3_crystal.calculators import LammpsEAMCalculator, make_calculator

        self.agent = load_batch_agent(model, allow_pickle) if agent is None else agent
        self.calculator = make_calculator(calculator)
        if isinstance(self.calculator, LammpsEAMCalculator):
            self.calculator.max_instances = max(self.calculator.max_instances, 256)

    def relax(
        self, items: Sequence[tuple[int, Atoms]], settings: Mapping[str, Any], on_done: Callable | None = None
    ) -> list[tuple[int, dict[str, Any], Atoms | None]]:
        from sb3_crystal.relax.batch import relax_many

        indices = [index for index, _ in items]
        out: list[tuple[int, dict[str, Any], Atoms | None]] = []

        def collect(result: Any) -> None:
            entry = (indices[result.index], result.summary(), result.structure)
            out.append(entry)
            if on_done is not None:
                on_done(entry)

        relax_many(
            [atoms for _, atoms in items],
            self.agent,
            calculator=self.calculator,
            on_error="record",
            on_result=collect,
            **settings,
        )
        return out


class _WorkerSetup(NamedTuple):
    """What each worker process or Ray actor builds its :class:`_Relaxer` from (its arguments, in order)."""

    model: Any
    calculator: Any
    threads: int | None
    allow_pickle: bool


_WORKER: dict[str, _Relaxer] = {}


def _init_worker(setup: _WorkerSetup) -> None:
    _WORKER["relaxer"] = _Relaxer(*setup)


def _relax_in_worker(items: Sequence[tuple[int, Atoms]], settings: Mapping[str, Any]) -> list[tuple[int, dict, Atoms | None]]:
    return _WORKER["relaxer"].relax(items, settings)


def _chunks(items: list[tuple[int, Atoms]], size: int) -> list[list[tuple[int, Atoms]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _failure(err: BaseException) -> dict[str, Any]:
    return {"converged": False, "force_calls": 0, "stop_reason": "error", "error": f"{type(err).__name__}: {err}"}


def _in_processes(
    items: list[tuple[int, Atoms]], chunk: int, workers: int, setup: _WorkerSetup, settings: Mapping[str, Any]
) -> Iterator[tuple[int, dict[str, Any], Atoms | None]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a process that runs torch threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(setup,)) as pool:
        futures = {pool.submit(_relax_in_worker, part, settings): part for part in _chunks(items, chunk)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    yield from future.result()
                except Exception as err:  # the worker died or could not start: the chunk's jobs report it
                    for index, _ in futures[future]:
                        yield index, _failure(err), None


def _on_ray(
    items: list[tuple[int, Atoms]],
    chunk: int,
    workers: int | None,
    address: str,
    setup: _WorkerSetup,
    settings: Mapping[str, Any],
) -> Iterator[tuple[int, dict[str, Any], Atoms | None]]:
    try:
        import ray
    except ImportError as err:
        raise ImportError("--ray needs the ray package: pip install 'sb3-crystal[ray]'") from err

    started = False
    if not ray.is_initialized():
        if address in ("", "local"):
            ray.init(num_cpus=workers or 2, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        n_actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor_class = ray.remote(num_cpus=1)(_Relaxer)
        shared = setup._replace(model=ray.put(setup.model))  # the model goes to the object store once
        idle = [actor_class.remote(*shared) for _ in range(n_actors)]
        queue = _chunks(items, chunk)[::-1]
        running: dict[Any, tuple[Any, list[tuple[int, Atoms]]]] = {}
        while queue or running:
            while queue and idle:
                actor, part = idle.pop(), queue.pop()
                running[actor.relax.remote(part, dict(settings))] = (actor, part)
            if not running:  # every actor died: the rest cannot run
                for part in queue[::-1]:
                    for index, _ in part:
                        yield index, _failure(RuntimeError("no Ray worker left")), None
                queue = []
                break
            (ready,), _ = ray.wait(list(running), num_returns=1)
            actor, part = running.pop(ready)
            try:
                results = ray.get(ready)
            except Exception as err:  # the actor died (node lost, out of memory): its chunk reports it
                for index, _ in part:
                    yield index, _failure(err), None
                ray.kill(actor)
                continue
            idle.append(actor)
            yield from results
    finally:
        if started:
            ray.shutdown()


# -- the batch ----------------------------------------------------------------------------------------------------------
def run_batch(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: Any = None,
    fmax: float = 0.05,
    steps: int = 200,
    calculator: str | None = "lammps",
    hybrid: bool | Mapping[str, Any] = False,
    workers: int = 1,
    ray_address: str | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    retry_errors: bool = False,
    allow_pickle: bool = False,
    progress: bool | None = None,
    summary_every: float = 1.0,
    cell: str | None = None,
    **optimizer_kwargs: Any,
) -> list[dict[str, Any]]:
    """Relax every structure of ``inputs`` and stream the results to ``out_dir`` (see the module docstring).

    :param inputs: structure files, folders, glob patterns (a missing one raises before any work).
    :param out_dir: output folder (created); rerunning with the same settings resumes.
    :param model: the agent: ``None`` (shipped Al–Fe agent), an agent folder or SB3 zip, a shipped agent's name
        (``"alfe"``/``"default"``, ``"b2"``), or a model object (pickled to the workers).
    :param fmax: force threshold, eV/Å.
    :param steps: step cap per structure.
    :param calculator: calculator spec (a name or ``module:Class``: each worker builds its own).
    :param hybrid: as for :func:`~sb3_crystal.relax.batch.relax_many`.
    :param workers: parallel worker processes on this machine (1: in this process); with ``ray_address``, the Ray
        actors (default: one per CPU of the cluster, 2 on a local one).
    :param ray_address: run on Ray: ``"local"`` starts a local cluster of ``workers`` CPUs (2 by default), ``"auto"``
        joins the running cluster, ``"ray://host:10001"`` or ``"host:6379"`` a given one.
    :param batch_size: most structures in one lockstep batch (and in one chunk sent to a worker).
    :param threads: torch threads of each worker (default: 1 in parallel workers, torch's default in this process).
    :param retry_errors: run again the jobs whose record holds an error.
    :param allow_pickle: let ``model`` be an SB3 zip (loading one unpickles it, which runs code stored in it).
    :param progress: progress bar with ETA on stderr (default: when stderr is a terminal).
    :param summary_every: refresh the summary files at most this often, s (and always at the end).
    :param cell: relax the cell too, each structure through this ASE filter (``"frechet"``, ``"unit"``,
        ``"strain"``; :func:`~sb3_crystal.relax.batch.relax_many`: not its vectorised array path); the calculator is
        checked to give the stress, on the first structure it covers, before any work. A folder of a batch with
        another ``cell`` setting is refused as any other change of settings. ``None``: fixed cell.
    :param optimizer_kwargs: as for :func:`~sb3_crystal.relax.batch.relax_many`.
    :return: the summary rows of every job, in input order.
    :raises ValueError: bad settings, a calculator without stress for ``cell``, an output folder of other settings.
    """
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(fmax, (int, float)) and fmax > 0):
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an integer ≥ 0, got {steps!r}")
    if cell is not None:
        cell_filter(cell)  # an unknown name fails before any work
        cell = cell.lower()
    if isinstance(model, (str, os.PathLike)) and not os.path.exists(os.fspath(model)):
        _shipped_name(os.fspath(model))  # an unknown name fails before any work
    jobs = collect_jobs(inputs)
    agent = None
    if cell is not None:  # the stress, and a cell-aware agent takes FrechetCellFilter only: said before any work
        from sb3_crystal.relax.batch import check_cell_setting

        _check_stress(jobs, calculator)
        agent = load_batch_agent(model, allow_pickle)  # loaded once: a run in this process relaxes with it
        check_cell_setting(agent, cell)
    folder = Path(out_dir)
    settings = {"fmax": float(fmax), "steps": int(steps), "hybrid": hybrid if isinstance(hybrid, bool) else dict(hybrid)}
    if cell is not None:  # absent at fixed cell: folders of earlier fixed-cell batches resume
        settings["cell"] = cell
    settings.update(optimizer_kwargs)
    recorded = {
        "model": _describe_model(model),
        "calculator": calculator if isinstance(calculator, str) or calculator is None else type(calculator).__name__,
        **{key: _plain(value) for key, value in settings.items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    output = _Output(folder, jobs, recorded, summary_every)
    todo = [k for k, job in enumerate(jobs) if not output.done(job, retry_errors)]
    bar = _progress_bar(len(jobs), len(jobs) - len(todo), progress)
    try:
        for k in todo:  # unreadable files: reported at once
            job = jobs[k]
            if job.atoms is None:
                output.record(job, _failure(StructureFileError(job.error or "unreadable")) | {"error": job.error}, None)
                bar.update(1)
        items = [(k, jobs[k].atoms) for k in todo if jobs[k].atoms is not None]

        def sink(index: int, summary: dict[str, Any], atoms: Atoms | None) -> None:
            output.record(jobs[index], summary, atoms)
            bar.update(1)

        relax_settings = {**settings, "batch_size": batch_size}
        _relax_all(items, sink, workers, ray_address, model, calculator, relax_settings, threads, allow_pickle, agent)
    finally:
        bar.close()
        output.write_summary()
    return output.rows()


def _check_stress(jobs: Sequence[BatchJob], calculator: Any) -> None:
    """Raise unless ``calculator`` gives the stress: asked of the first readable structure whose elements it covers
    (of the first readable one when it does not say which it covers; none readable: nothing to check)."""
    from sb3_crystal.calculators import calculator_elements, make_calculator

    readable = [job for job in jobs if job.atoms is not None]
    if not readable:
        return
    calc = make_calculator(calculator)
    elements = calculator_elements(calc)
    covered = [job for job in readable if elements is None or set(job.atoms.get_chemical_symbols()) <= set(elements)]
    job = (covered or readable)[0]
    atoms = job.atoms.copy()
    atoms.calc = calc
    name = calculator if isinstance(calculator, str) else None
    try:
        check_gives_stress(atoms, name)
    except ValueError as err:
        raise ValueError(f"{job.source}: {err}") from None


def _relax_all(
    items: list[tuple[int, Atoms]],
    sink: Callable[[int, dict[str, Any], Atoms | None], None],
    workers: int,
    ray_address: str | None,
    model: Any,
    calculator: Any,
    settings: dict[str, Any],
    threads: int | None,
    allow_pickle: bool = False,
    agent: Any = None,
) -> None:
    """Relax the jobs in this process, worker processes or on Ray; ``sink`` gets each result as it arrives
    (``agent``: the agent of ``model`` when already loaded here, for a run in this process)."""
    if not items:
        return
    if ray_address is None and workers == 1:
        relaxer = _Relaxer(model, calculator, threads, allow_pickle, agent)
        relaxer.relax(items, settings, on_done=lambda entry: sink(*entry))  # each result as its structure finishes
        return
    parallel = workers if ray_address is None or workers > 1 else None
    chunk = max(1, min(settings["batch_size"], math.ceil(len(items) / (4 * (parallel or 2)))))
    setup = _WorkerSetup(model, calculator, threads or 1, allow_pickle)
    if ray_address is None:
        results = _in_processes(items, chunk, workers, setup, settings)
    else:
        results = _on_ray(items, chunk, parallel, ray_address, setup, settings)
    for entry in results:
        sink(*entry)


def _progress_bar(total: int, done: int, progress: bool | None) -> Any:
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, initial=done, desc="relaxing", unit="structure", disable=not enabled, file=sys.stderr)

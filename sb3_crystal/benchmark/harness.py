"""The relaxation benchmark: the same seeded distorted starts for every relaxer, force calls per threshold.

For each structure (a relaxed minimum), ``n_starts`` starts are drawn with the paper's distortion
β·U(−1, 1) per Cartesian coordinate; start ``k`` uses ``np.random.default_rng(seed + k)``, so every relaxer
sees the same starts and any single start can be rebuilt alone from its ``start_seed`` column. Every relaxer
relaxes every start to every threshold ε (one run read off for all ε where that is exact, see
:attr:`~sb3_crystal.benchmark.classical.Relaxer.fmax_independent`).

**Same minimum.** A run reached the reference minimum when, after an uncounted polish of its final structure
(BFGS to ``polish_fmax``, by default the 1e-3 eV/Å of the reference, so that a loose ε is judged by the basin
it ended in rather than by its remaining distance to the bottom), both

- the energy per atom is within ``energy_tol`` (1e-4 eV) of the reference's, and
- the positions match the reference's within ``position_tol`` (0.05 Å) for every atom, up to a rigid
  translation, lattice vectors (wrapping), and relabelling of atoms of the same element
  (:func:`structure_deviation`).

When the reference is a saddle point (``MinimumReport.is_minimum`` False) starts legitimately fall into other
minima; the ``reference_is_minimum`` column says which rows that concerns.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize import BFGS

from sb3_crystal.benchmark.classical import (
    DEFAULT_OPTIMIZERS,
    Relaxer,
    RelaxResult,
    make_relaxer,
)
from sb3_crystal.calculators import CalculatorSpec, ForceCallCounter, make_calculator
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import MinimumReport

__all__ = [
    "DEFAULT_FMAXES",
    "ROW_FIELDS",
    "SUMMARY_FIELDS",
    "compare_to_reference",
    "format_table",
    "make_starts",
    "plot_force_calls",
    "run_benchmark",
    "structure_deviation",
    "structure_name",
    "summarize",
    "write_csv",
    "write_results",
]

#: The README's thresholds ε, eV/Å.
DEFAULT_FMAXES: tuple[float, ...] = (0.1, 0.05, 0.01)

#: Columns of one benchmark row (one start relaxed by one relaxer to one threshold).
ROW_FIELDS: tuple[str, ...] = (
    "structure",
    "formula",
    "n_atoms",
    "optimizer",
    "fmax",
    "beta",
    "start",
    "start_seed",
    "converged",
    "force_calls",
    "steps",
    "final_fmax",
    "final_energy",
    "energy_error",
    "deviation",
    "same_minimum",
    "reference_is_minimum",
    "wall_time",
    "error",
)

#: Columns of a summary row (one structure, relaxer and threshold). Force-call statistics are over converged runs.
SUMMARY_FIELDS: tuple[str, ...] = (
    "structure",
    "n_atoms",
    "optimizer",
    "fmax",
    "n_runs",
    "n_converged",
    "success_rate",
    "same_minimum_rate",
    "reference_is_minimum",
    "median",
    "p10",
    "p90",
    "mean",
    "median_steps",
)


# -- starts and comparison --------------------------------------------------------------------------------------
def make_starts(minimum: Atoms, beta: float, n_starts: int, seed: int = 0, min_distance: float = 0.0) -> list[Atoms]:
    """Seeded distorted starts around a minimum (:func:`~sb3_crystal.structures.geometry.distort`).

    :param minimum: the relaxed structure.
    :param beta: distortion β in Å: each coordinate moves by β·U(−1, 1).
    :param n_starts: number of starts.
    :param seed: start ``k`` is drawn from ``np.random.default_rng(seed + k)``.
    :param min_distance: redraw starts with two atoms closer than this (Å; 0 keeps the paper's distribution).
    :return: the starts, each with ``info["start_seed"]``.
    """
    if n_starts < 0:
        raise ValueError(f"n_starts must be ≥ 0, got {n_starts}")
    starts = []
    for k in range(n_starts):
        start = distort(minimum, beta, np.random.default_rng(seed + k), min_distance=min_distance)
        start.calc = None
        start.info["start_seed"] = seed + k
        starts.append(start)
    return starts


def structure_name(atoms: Atoms) -> str:
    """``info["name"]``, else ``info["source"]``, else the chemical formula."""
    return str(atoms.info.get("name") or atoms.info.get("source") or atoms.get_chemical_formula())


def _matched_residuals(positions: np.ndarray, numbers: np.ndarray, reference: Atoms, wrap: Any) -> np.ndarray:
    """Per atom, the shortest periodic vector to the nearest reference site of its element."""
    residuals = np.empty_like(positions)
    for z in np.unique(numbers):
        mine, theirs = numbers == z, reference.numbers == z
        pairs = wrap(positions[mine][:, None, :] - reference.positions[theirs][None, :, :])
        nearest = np.argmin(np.einsum("ijk,ijk->ij", pairs, pairs), axis=1)
        residuals[mine] = pairs[np.arange(len(nearest)), nearest]
    return residuals


def structure_deviation(atoms: Atoms, reference: Atoms, good_enough: float = 0.0) -> float:
    """Largest atomic displacement (Å) between two structures of one cell, up to moves that change nothing physical.

    Those moves are a rigid translation, lattice vectors (wrapping), and relabelling of atoms of the same element.
    Every translation that puts atom 0 on a reference site of its element is tried (the one that keeps atom 0 on
    its own site first), then refined by the mean residual; the smallest largest displacement wins. That is an
    upper bound of the best over all translations, and exact when the structures match.

    :param atoms: the structure to judge (same cell as ``reference``).
    :param reference: the reference structure.
    :param good_enough: stop at the first translation whose deviation is at most this (a yes/no test needs no more).
    :return: the deviation in Å; ``inf`` when the compositions differ.
    """
    if len(atoms) != len(reference) or sorted(atoms.numbers) != sorted(reference.numbers):
        return math.inf
    if len(atoms) == 0:
        return 0.0
    cell = np.asarray(reference.cell)
    inverse = np.linalg.inv(cell)

    def wrap(vectors: np.ndarray) -> np.ndarray:
        # Rounding fractional coordinates finds the shortest image of any vector short against the cell,
        # which is all a match within tolerance needs.
        frac = vectors @ inverse
        return (frac - np.round(frac)) @ cell

    numbers = atoms.numbers
    sites = np.flatnonzero(reference.numbers == numbers[0])
    sites = np.concatenate([sites[sites == 0], sites[sites != 0]])
    best = math.inf
    for site in sites:
        shift = wrap(atoms.positions[0] - reference.positions[site])
        shifted = atoms.positions - shift
        residuals = _matched_residuals(shifted, numbers, reference, wrap)
        refined = _matched_residuals(shifted - residuals.mean(axis=0), numbers, reference, wrap)
        best = min(best, float(np.linalg.norm(residuals, axis=1).max()), float(np.linalg.norm(refined, axis=1).max()))
        if best <= good_enough:
            break
    return best


def compare_to_reference(
    final: Atoms,
    reference: Atoms,
    reference_energy: float,
    calculator: Any,
    energy_tol: float = 1e-4,
    position_tol: float = 0.05,
    polish_fmax: float | None = 1e-3,
    polish_steps: int = 1000,
) -> tuple[bool, float, float]:
    """Whether a relaxed structure lies in the reference's minimum (see the module docstring).

    :param final: the relaxed structure.
    :param reference: the reference minimum.
    :param reference_energy: its energy, eV.
    :param calculator: an ASE calculator, not counted (the polish costs are not the relaxer's).
    :param energy_tol: energy-per-atom tolerance, eV.
    :param position_tol: position tolerance, Å.
    :param polish_fmax: polish ``final`` with BFGS to this threshold first (``None``: compare as is).
    :param polish_steps: step cap of the polish.
    :return: ``(same, energy error per atom in eV, deviation in Å)``.
    """
    work = final.copy()
    work.calc = calculator
    if polish_fmax is not None:
        BFGS(work, logfile=None, maxstep=0.2).run(fmax=polish_fmax, steps=polish_steps)
    energy_error = (float(work.get_potential_energy()) - reference_energy) / len(work)
    deviation = structure_deviation(work, reference, good_enough=position_tol)
    work.calc = None
    return bool(abs(energy_error) <= energy_tol and deviation <= position_tol), energy_error, deviation


# -- the benchmark loop -----------------------------------------------------------------------------------------
def _progress(total: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm  # only long runs need it

    # enabled=None: tqdm's own rule, a bar only on a terminal.
    return tqdm(total=total, file=sys.stderr, disable=None if enabled is None else not enabled, unit="run", leave=False)


def run_benchmark(
    structures: Sequence[Atoms],
    optimizers: Sequence[str | Relaxer] = DEFAULT_OPTIMIZERS,
    beta: float = 0.5,
    fmaxes: Sequence[float] = DEFAULT_FMAXES,
    n_starts: int = 20,
    seed: int = 0,
    calculator: CalculatorSpec = "lammps",
    max_steps: int = 1000,
    min_distance: float = 0.0,
    energy_tol: float = 1e-4,
    position_tol: float = 0.05,
    polish_fmax: float | None = 1e-3,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Relax the same seeded starts of every structure with every relaxer to every threshold.

    :param structures: relaxed minima (``info["minimum"]``, a :class:`MinimumReport`, says whether each is a true
        minimum; without it a minimum is assumed). Their names come from :func:`structure_name`.
    :param optimizers: relaxer names (see :data:`~sb3_crystal.benchmark.classical.OPTIMIZERS`) or :class:`Relaxer` objects.
    :param beta: distortion β, Å.
    :param fmaxes: force thresholds ε, eV/Å.
    :param n_starts: starts per structure.
    :param seed: base seed (see :func:`make_starts`).
    :param calculator: calculator spec, built once and shared by all runs.
    :param max_steps: optimizer step cap per run.
    :param min_distance: see :func:`make_starts`.
    :param energy_tol: same-minimum energy tolerance, eV/atom.
    :param position_tol: same-minimum position tolerance, Å.
    :param polish_fmax: polish threshold before the same-minimum test (``None``: none).
    :param progress: tqdm bar on stderr (``None``: only on a terminal).
    :return: one row per (structure, relaxer, start, threshold) with the fields of :data:`ROW_FIELDS`.
    """
    if not beta >= 0:
        raise ValueError(f"beta must be ≥ 0 Å, got {beta}")
    thresholds = sorted({float(f) for f in fmaxes}, reverse=True)
    if not thresholds or min(thresholds) <= 0:
        raise ValueError(f"force thresholds must be > 0 eV/Å, got {list(fmaxes)}")
    relaxers = [make_relaxer(item) for item in optimizers]
    calc = make_calculator(calculator)
    counter = ForceCallCounter(calc)
    rows: list[dict[str, Any]] = []
    total = len(structures) * len(relaxers) * n_starts
    with _progress(total, progress) as bar:
        for reference in structures:
            name = structure_name(reference)
            report = reference.info.get("minimum")
            is_minimum = bool(report.is_minimum) if isinstance(report, MinimumReport) else True
            ref = reference.copy()
            ref.calc = calc
            reference_energy = float(ref.get_potential_energy())
            ref.calc = None
            starts = make_starts(ref, beta, n_starts, seed, min_distance)
            for relaxer in relaxers:
                bar.set_description(f"{name} {relaxer.name}")
                for k, start in enumerate(starts):
                    results = relaxer.relax_thresholds(start, counter, thresholds, max_steps)
                    # One polish per distinct final geometry: a read-off often stops several ε at one point.
                    verdicts: dict[bytes, tuple[bool, float, float]] = {}
                    for fmax in thresholds:
                        result = results[fmax]
                        key = result.atoms.positions.tobytes()
                        if key not in verdicts:
                            verdicts[key] = compare_to_reference(
                                result.atoms, ref, reference_energy, calc, energy_tol, position_tol, polish_fmax
                            )
                        rows.append(_row(name, ref, relaxer, fmax, beta, k, start, result, verdicts[key], is_minimum))
                    bar.update()
    return rows


def _row(
    name: str,
    reference: Atoms,
    relaxer: Relaxer,
    fmax: float,
    beta: float,
    k: int,
    start: Atoms,
    result: RelaxResult,
    verdict: tuple[bool, float, float],
    is_minimum: bool,
) -> dict[str, Any]:
    same, energy_error, deviation = verdict
    return {
        "structure": name,
        "formula": reference.get_chemical_formula(),
        "n_atoms": len(reference),
        "optimizer": relaxer.name,
        "fmax": fmax,
        "beta": beta,
        "start": k,
        "start_seed": int(start.info.get("start_seed", k)),
        "converged": bool(result.converged),
        "force_calls": int(result.force_calls),
        "steps": int(result.steps),
        "final_fmax": float(result.fmax),
        "final_energy": float(result.energy),
        "energy_error": float(energy_error),
        "deviation": float(deviation),
        "same_minimum": bool(same and result.converged),
        "reference_is_minimum": is_minimum,
        "wall_time": float(result.wall_time),
        "error": result.error,
    }


# -- summary, files, plot ---------------------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statistics per (structure, optimizer, ε), in the order the rows first name them.

    Force-call statistics (median, 10th/90th percentile with linear interpolation, mean) and the median step
    count are over *converged* runs (NaN when none converged); ``success_rate`` is the fraction converged, and
    ``same_minimum_rate`` the fraction that converged into the reference minimum.

    :param rows: benchmark rows (as returned by :func:`run_benchmark` or read back from its CSV).
    """
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["structure"]), str(row["optimizer"]), float(row["fmax"])), []).append(row)
    summary = []
    for (structure, optimizer, fmax), members in groups.items():
        converged = [r for r in members if _truthy(r["converged"])]
        calls = np.array([float(r["force_calls"]) for r in converged])
        steps = np.array([float(r["steps"]) for r in converged])
        has = len(calls) > 0
        summary.append(
            {
                "structure": structure,
                "n_atoms": int(members[0]["n_atoms"]),
                "optimizer": optimizer,
                "fmax": fmax,
                "n_runs": len(members),
                "n_converged": len(converged),
                "success_rate": len(converged) / len(members),
                "same_minimum_rate": sum(_truthy(r["same_minimum"]) for r in members) / len(members),
                "reference_is_minimum": all(_truthy(r["reference_is_minimum"]) for r in members),
                "median": float(np.median(calls)) if has else math.nan,
                "p10": float(np.percentile(calls, 10)) if has else math.nan,
                "p90": float(np.percentile(calls, 90)) if has else math.nan,
                "mean": float(calls.mean()) if has else math.nan,
                "median_steps": float(np.median(steps)) if has else math.nan,
            }
        )
    return summary


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned markdown table (force calls over converged runs)."""
    headers = ["structure", "N", "optimizer", "ε (eV/Å)", "median", "p10", "p90", "mean", "success", "same min", "ref min"]
    body = [
        [
            str(s["structure"]),
            str(s["n_atoms"]),
            str(s["optimizer"]),
            f"{float(s['fmax']):g}",
            _cell(float(s["median"])),
            _cell(float(s["p10"])),
            _cell(float(s["p90"])),
            _cell(float(s["mean"])),
            f"{float(s['success_rate']):.0%}",
            f"{float(s['same_minimum_rate']):.0%}",
            _cell(bool(s["reference_is_minimum"])),
        ]
        for s in summary
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    numeric = set(range(3, 10))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(b) for b in body)])


def _atomic_write(path: Path, write: Any, suffix: str, binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike, fields: Sequence[str] | None = None) -> Path:
    """Write rows as CSV, atomically.

    :param rows: dicts (extra keys are ignored).
    :param path: output file.
    :param fields: column order; default :data:`ROW_FIELDS`.
    """
    path = Path(path)
    columns = list(fields or ROW_FIELDS)

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    _atomic_write(path, write, ".tmp")
    return path


def plot_force_calls(summary: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Force calls vs ε, like the paper's Fig. 4: one panel per structure, one colour per optimizer,
    median (solid, markers), 10–90 % band (shaded) and mean (dashed); log ε axis, decreasing to the right.

    :param summary: rows of :func:`summarize`.
    :param path: PNG file (written atomically).
    :param title: figure title.
    """
    import matplotlib  # plotting is optional for library users

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    structures = list(dict.fromkeys(str(s["structure"]) for s in summary))
    n_panels = max(1, len(structures))
    fig, axes = plt.subplots(1, n_panels, figsize=(4.8 * n_panels + 1.8, 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    optimizers = list(dict.fromkeys(str(s["optimizer"]) for s in summary))
    for ax, structure in zip(axes[0], structures, strict=False):
        for j, optimizer in enumerate(optimizers):
            points = sorted(
                (s for s in summary if s["structure"] == structure and s["optimizer"] == optimizer), key=lambda s: s["fmax"]
            )
            if not points:
                continue
            eps = [float(s["fmax"]) for s in points]
            colour = colours[j % len(colours)]
            ax.plot(eps, [s["median"] for s in points], "o-", color=colour, label=optimizer)
            ax.fill_between(eps, [s["p10"] for s in points], [s["p90"] for s in points], color=colour, alpha=0.15)
            ax.plot(eps, [s["mean"] for s in points], "--", color=colour, alpha=0.8)
        ax.set_xscale("log")
        thresholds = sorted({float(s["fmax"]) for s in summary if s["structure"] == structure})
        ax.set_xticks(thresholds, [f"{t:g}" for t in thresholds])  # label the measured ε only
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("force threshold ε (eV/Å)")
        ax.set_ylabel("force calls")
        n_atoms = next(s["n_atoms"] for s in summary if s["structure"] == structure)
        ax.set_title(f"{structure} (N = {n_atoms})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(title="median, 10–90 %\n(dashed: mean)", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 60 * n_panels)), fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    _atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120), ".png", binary=True)
    plt.close(fig)
    return path


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """Write ``runs.csv``, ``summary.csv``, ``summary.md`` and ``force_calls.png`` into ``out_dir``.

    :param rows: benchmark rows.
    :param out_dir: output folder (created).
    :param title: plot title and heading of ``summary.md``.
    :return: ``{"runs": path, "summary": path, "table": path, "plot": path}``.
    """
    out = Path(out_dir)
    summary = summarize(rows)
    table = format_table(summary)
    heading = f"# {title}\n\n" if title else ""
    paths = {
        "runs": write_csv(rows, out / "runs.csv"),
        "summary": write_csv(summary, out / "summary.csv", SUMMARY_FIELDS),
        "table": out / "summary.md",
        "plot": plot_force_calls(summary, out / "force_calls.png", title),
    }
    _atomic_write(paths["table"], lambda handle: handle.write(f"{heading}{table}\n"), ".tmp")
    return paths

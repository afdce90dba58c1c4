#!/usr/bin/env python
"""Fit the shipped Al–Fe curvature model (:class:`~sb3_crystal.curvature.PairCurvatureModel`) to exact EAM Hessians.

Usage::

    python benchmarks/fit_curvature.py                      # writes sb3_crystal/curvature/alfe_pair_model.json
    python benchmarks/fit_curvature.py --out /tmp/model.json --scale 0.25   # a quick, smaller fit
    python benchmarks/fit_curvature.py --cell               # writes sb3_crystal/curvature/alfe_cell_model.json
    python benchmarks/fit_curvature.py --overlap test --overlap-out overlap.json  # check only, no fit

Training structures come from the package's generators with seeds outside every reserved evaluation range
(:func:`~sb3_crystal.structures.families.check_training_seed`), and are all away from minima:

- random symmetric Al–Fe cells of 4–8 atoms (pyxtal), each distorted twice by β ~ U(0.05, 0.4) Å, and the
  fixed-cell minimum of some of them (relaxed with the LAMMPS EAM to 0.05 eV/Å) distorted by β ~ U(0.05, 0.5) Å;
- bcc Fe–Al solid solutions (2×2×2, Al 0–0.6), B2 AlFe 2×2×2 with 0–1 vacancies and 0–2 antisites, fcc Al–Fe
  (1×1×1 and 2×2×2), bcc and B2 3×3×3, rattled by U(0.02, 0.3) Å.

Their exact Hessians come from matscipy's analytic EAM Hessian on the package's Mendelev potential. Every fitting
structure is compared with every validation and test family cell with pymatgen's ``StructureMatcher``
(:func:`~sb3_crystal.structures.families.training_matches`); a match is left out of the fit and reported. One
fifth of the structures (every fifth) is held out and the model's errors on it are written into the model's
``info`` and printed: the relative Frobenius error of the Hessian and the cosine and length ratio of its Newton
step against the exact Hessian's.

``--cell`` fits the model for relaxations of the cell too (:func:`~sb3_crystal.curvature.load_cell_model`): every
structure above (after the family check) is first deformed homogeneously, a volume change U(±6 %) and a symmetric
shear with off-diagonal strains U(±4 %) (its own seeds), and the fit targets the exact Hessian over atoms and the
deformation (:func:`~sb3_crystal.curvature.fit.exact_strain_hessian`: matscipy's analytic atom block, the strain
columns from central differences of the LAMMPS forces and stress), each block's error relative to its own size.
The held-out errors then also hold the strain, mixed and relaxed-strain blocks and the cosine of the step of atoms
and cell (:func:`~sb3_crystal.curvature.fit.strain_hessian_errors`), for this model and for the atoms-only one.

``--overlap SPLIT`` fits nothing: it rebuilds the fitting structures, confirms they are the shipped model's (its
held-out errors recomputed on them equal the ones in the model's ``info``), and checks every Al–Fe family cell of
the split against each of them (and its undistorted cell) with the same ``StructureMatcher`` settings. A family
cell that matches a structure of the fitting set (fitted or held out) is listed under ``exclude`` in the JSON
report: a report on that split leaves it out. Matches with the structures the fit already left out are listed
apart (those never entered the model).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.optimize import BFGSLineSearch

from sb3_crystal.calculators import make_calculator, matscipy_eam
from sb3_crystal.curvature import PairCurvatureModel, load_model
from sb3_crystal.curvature.fit import (
    NormalEquations,
    exact_hessian,
    exact_strain_hessian,
    hessian_errors,
    set_parameters,
    strain_hessian_errors,
)
from sb3_crystal.structures.families import FAMILIES, SPLITS, check_training_seed, test_family, training_matches
from sb3_crystal.structures.generators import RandomCellGenerator, SolidSolutionGenerator
from sb3_crystal.structures.geometry import distort

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sb3_crystal" / "curvature" / "alfe_pair_model.json"
DEFAULT_CELL_OUT = DEFAULT_OUT.with_name("alfe_cell_model.json")
#: ``--cell``: seed offset of each structure's homogeneous deformation, and its ranges.
STRAIN_OFFSET = 30_000
VOLUME_CHANGE = 0.06
SHEAR = 0.04
#: First master seed of the fitting structures (far below the reserved 7,000,000+).
SEED = 20_000
CUTOFF = 6.5  # the Mendelev potential's cutoff, Å
CENTERS = np.linspace(1.7, 6.3, 28)
WIDTH = 0.17
EMBEDDING_CENTERS = np.linspace(2.0, 6.0, 10)
EMBEDDING_WIDTH = 0.44


def _rng(offset: int) -> np.random.Generator:
    seed = SEED + offset
    check_training_seed(seed, "fitting structure seed")
    return np.random.default_rng(seed)


def training_structures(scale: float) -> list[tuple[str, Atoms, Atoms]]:
    """(source, structure, reference) triples; the reference is the undistorted cell the structure was made from (the
    pyxtal cell, its minimum, or the ideal lattice sites), for the family check. ``scale`` multiplies every count."""

    def count(n: int) -> int:
        return max(1, round(n * scale))

    out: list[tuple[str, Atoms, Atoms]] = []
    lammps = make_calculator("lammps")
    cells = RandomCellGenerator(atoms=(4, 8))
    for k in range(count(60)):
        rng = _rng(k)
        cell = cells.sample(rng)
        for _ in range(2):
            out.append(("random_4-8", distort(cell, float(rng.uniform(0.05, 0.4)), rng, min_distance=1.6), cell))
        if k % 2 == 0:
            work = cell.copy()
            work.calc = lammps
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                BFGSLineSearch(work, logfile=None).run(fmax=0.05, steps=200)
            minimum = Atoms(work.numbers, positions=work.positions, cell=work.cell, pbc=True)
            out.append(("random_4-8_relaxed", distort(minimum, float(rng.uniform(0.05, 0.5)), rng, min_distance=1.6), minimum))
    sources = [
        ("bcc_16", 40, 1_000, dict(lattice="bcc", size=2, al=(0.0, 0.6))),
        ("b2_16", 40, 2_000, dict(lattice="b2", size=2, vacancies=(0, 1), antisites=(0, 2))),
        ("fcc_4", 10, 3_000, dict(lattice="fcc", size=1, al=(0.0, 1.0))),
        ("fcc_32", 12, 4_000, dict(lattice="fcc", size=2, al=(0.0, 1.0))),
        ("bcc_54", 4, 5_000, dict(lattice="bcc", size=3, al=(0.0, 0.6))),
        ("b2_54", 4, 6_000, dict(lattice="b2", size=3, vacancies=(0, 1), antisites=(0, 2))),
    ]
    for name, n, offset, kwargs in sources:
        for k in range(count(n)):
            rng = _rng(offset + k)
            generator = SolidSolutionGenerator(rattle=float(rng.uniform(0.02, 0.3)), **kwargs)
            reference = _rng(offset + k)
            reference.uniform()  # the same draws as above: sample() rattles the structure ideal() builds
            out.append((name, generator.sample(rng), generator.ideal(reference)))
    return out


#: Family cells not checked by default: drawing the test split's random 10–20-atom cells with pyxtal took more than
#: 30 minutes on the shared 2-core CPU (``--all-family-cells`` checks them too).
SLOW_FAMILIES = {("test", "random_10-20_beta0.3"), ("test", "random_10-20_beta0.5")}


def strained(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """``atoms`` (a copy) deformed by a random volume change and symmetric shear, the atoms following the cell."""
    shear = rng.uniform(-SHEAR, SHEAR, 3)
    deformation = np.eye(3)
    deformation[1, 2] = deformation[2, 1] = shear[0]
    deformation[0, 2] = deformation[2, 0] = shear[1]
    deformation[0, 1] = deformation[1, 0] = shear[2]
    volume = 1.0 + float(rng.uniform(-VOLUME_CHANGE, VOLUME_CHANGE))
    deformation *= (volume / np.linalg.det(deformation)) ** (1.0 / 3.0)
    out = atoms.copy()
    out.set_cell(np.array(atoms.cell) @ deformation, scale_atoms=True)
    return out


def family_cells(skip: set[tuple[str, str]]) -> list[tuple[str, Atoms]]:
    """The validation and test family cells, less the (split, family) pairs in ``skip``."""
    cells = []
    for split in ("validation", "test"):
        for name in FAMILIES:
            if (split, name) in skip:
                continue
            family = test_family(name, split)
            cells += [(f"{split}:{name}[{j}]", cell) for j, cell in enumerate(family.cells)]
    return cells


def left_out_indices(info: dict) -> set[int]:
    """Indices (into :func:`training_structures` at scale 1) of the structures a fit's family check left out,
    read from its model's ``info``."""
    notes = info.get("family_check", {}).get("matches_left_out", [])
    return {int(re.match(r"fitting structure (\d+) ", note).group(1)) for note in notes}  # type: ignore[union-attr]


def overlap_report(split: str, model_path: Path | None, out: Path) -> None:
    """Check every Al–Fe family cell of ``split`` against the shipped model's fitting set; write ``out`` (JSON)."""
    t0 = time.perf_counter()
    model = load_model(model_path)
    info = model.info
    if info.get("command", "").strip() != "python benchmarks/fit_curvature.py":
        raise SystemExit(f"--overlap: the model was fitted by {info.get('command')!r}, not the default fit it rebuilds")
    structures = training_structures(1.0)
    left_out = left_out_indices(info)
    kept = [k for k in range(len(structures)) if k not in left_out]
    if len(kept) != info["n_fit"] + info["n_held_out"]:
        expected = f"{info['n_fit']} + {info['n_held_out']}"
        raise SystemExit(f"--overlap: {len(kept)} structures remain, the model's info says {expected}")
    held_out = {kept[k] for k in range(0, len(kept), 5)}
    print(f"{len(structures)} structures rebuilt, {len(left_out)} left out by the fit ({time.perf_counter() - t0:.0f} s)")

    # the fitting set is the model's: its held-out errors, recomputed, are the ones it records
    calc, lammps = matscipy_eam(), make_calculator("lammps")
    errors: dict[str, list[float]] = {}
    for k in sorted(held_out):
        source, atoms, _ = structures[k]
        work = atoms.copy()
        work.calc = lammps
        errors.setdefault(source.split("_relaxed")[0], []).append(
            hessian_errors(model, atoms, exact_hessian(calc, atoms), work.get_forces())["frobenius"]
        )
    recorded = {s: r["frobenius"]["median"] for s, r in info["held_out_errors"].items()}
    recomputed = {s: float(np.median(v)) for s, v in errors.items()}
    same = recorded.keys() == recomputed.keys() and all(abs(recorded[s] - recomputed[s]) < 1e-6 for s in recorded)
    print(f"held-out median errors recomputed {'equal' if same else 'DIFFER'}: {recomputed}")
    if not same:
        raise SystemExit(f"--overlap: the rebuilt fitting set is not the model's (recorded {recorded})")

    cells = []
    for name, spec in FAMILIES.items():
        if spec.calculator != "lammps":
            continue  # Cu–Au families: no fitting structure has their elements
        family = test_family(name, split)
        cells += [(name, f"{name}[{j}]", cell) for j, cell in enumerate(family.cells)]
    print(f"{len(cells)} {split} family cells ({time.perf_counter() - t0:.0f} s)", flush=True)
    theirs = [atoms for _, _, atoms in cells]
    pairs = [(i, k, "structure") for i, k in training_matches([a for _, a, _ in structures], theirs)]
    pairs += [(i, k, "undistorted cell") for i, k in training_matches([r for _, _, r in structures], theirs)]
    exclude: dict[str, list[str]] = {}
    apart: dict[str, list[str]] = {}
    for i, k, what in sorted(pairs):
        role = "left out of the fit" if i in left_out else ("held out" if i in held_out else "fitted")
        note = f"fitting structure {i} ({structures[i][0]}, {role}; its {what})"
        (apart if i in left_out else exclude).setdefault(cells[k][1], []).append(note)
    per_family = {
        name: {
            "cells": sum(1 for f, _, _ in cells if f == name),
            "match_fitting_set": sorted(c for c in exclude if c.rsplit("[", 1)[0] == name),
            "match_only_left_out": sorted(c for c in apart if c not in exclude and c.rsplit("[", 1)[0] == name),
        }
        for name in dict.fromkeys(f for f, _, _ in cells)
    }
    report = {
        "command": f"python benchmarks/fit_curvature.py --overlap {split}",
        "split": split,
        "minutes": (time.perf_counter() - t0) / 60,
        "matcher": "sb3_crystal.structures.families.training_matches (StructureMatcher ltol 0.2, stol 0.3, "
        "angle_tol 5, primitive_cell, scale; same reduced formula only)",
        "fitting_structures": len(structures),
        "left_out_by_fit": sorted(left_out),
        "fitting_set": len(kept),
        "held_out_errors_reproduced": recomputed,
        "family_cells": len(cells),
        "families": per_family,
        "exclude": exclude,
        "matches_left_out_only": {c: v for c, v in apart.items() if c not in exclude},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for name, entry in per_family.items():
        print(
            f"  {name}: {entry['cells']} cells, {len(entry['match_fitting_set'])} match the fitting set, "
            f"{len(entry['match_only_left_out'])} only left-out structures"
        )
    print(f"wrote {out} in {report['minutes']:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default: the shipped model's file")
    parser.add_argument("--cell", action="store_true", help="fit the cell model to strained structures' strain Hessians")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every structure count (quick checks)")
    parser.add_argument("--ridge", type=float, default=1e-9)
    parser.add_argument("--no-embedding", action="store_true", help="pair term only")
    parser.add_argument("--all-family-cells", action="store_true", help="also the test split's random 10–20 cells")
    parser.add_argument("--no-family-check", action="store_true", help="skip the StructureMatcher check (quick checks)")
    parser.add_argument("--overlap", choices=SPLITS, default=None, help="no fit: check this split against the fitting set")
    parser.add_argument("--model", type=Path, default=None, help="--overlap: the model whose fitting set (default: shipped)")
    parser.add_argument("--overlap-out", type=Path, default=Path("curvature_overlap.json"), help="--overlap: report path")
    args = parser.parse_args()
    if args.overlap is not None:
        overlap_report(args.overlap, args.model, args.overlap_out)
        return
    default_out = DEFAULT_CELL_OUT if args.cell else DEFAULT_OUT
    args.out = default_out if args.out is None else args.out
    t0 = time.perf_counter()
    structures = training_structures(args.scale)
    print(f"{len(structures)} fitting structures in {time.perf_counter() - t0:.0f} s", flush=True)

    matched: list[str] = []
    bad: list[int] = []
    checked = 0
    skipped: set[tuple[str, str]] = set()
    if not args.no_family_check:
        t1 = time.perf_counter()
        skipped = set() if args.all_family_cells else SLOW_FAMILIES
        cells = family_cells(skipped)
        checked = len(cells)
        theirs = [atoms for _, atoms in cells]
        pairs = training_matches([atoms for _, atoms, _ in structures], theirs)
        pairs += training_matches([reference for _, _, reference in structures], theirs)
        bad = sorted({i for i, _ in pairs})
        matched = sorted({f"fitting structure {i} ({structures[i][0]}) matches {cells[k][0]}" for i, k in pairs})
        for note in matched:
            print("  left out:", note)
        structures = [s for i, s in enumerate(structures) if i not in set(bad)]
        print(
            f"StructureMatcher against {checked} family cells: {len(bad)} fitting structures matched "
            f"({len(matched)} pairs), left out; {len(structures)} remain ({time.perf_counter() - t1:.0f} s)"
        )

    t1 = time.perf_counter()
    calc = matscipy_eam()
    lammps = make_calculator("lammps")
    if args.cell:  # each structure deformed homogeneously, by a seed of its index in the full list
        kept = [k for k in range(len(structures) + len(bad)) if k not in set(bad)]
        structures = [
            (source, strained(atoms, _rng(STRAIN_OFFSET + k)), reference)
            for k, (source, atoms, reference) in zip(kept, structures, strict=True)
        ]
    hessians = [exact_hessian(calc, atoms) for _, atoms, _ in structures]
    if args.cell:
        hessians = [exact_strain_hessian(h, lammps, atoms) for h, (_, atoms, _) in zip(hessians, structures, strict=True)]
    print(f"exact Hessians in {time.perf_counter() - t1:.0f} s", flush=True)

    embedding = {} if args.no_embedding else {"embedding_centers": EMBEDDING_CENTERS, "embedding_width": EMBEDDING_WIDTH}
    model = PairCurvatureModel(("Al", "Fe"), CUTOFF, CENTERS, WIDTH, **embedding)
    held_out = set(range(0, len(structures), 5))
    equations = NormalEquations(model)
    for k, ((_, atoms, _), hessian) in enumerate(zip(structures, hessians, strict=True)):
        if k not in held_out:
            # relative error per structure: compressed far-from-minimum cells do not drown the rest (strain
            # Hessians: per block, NormalEquations.add)
            weight = 1.0 if args.cell else len(atoms) / float(np.linalg.norm(hessian)) ** 2
            equations.add(atoms, hessian, weight=weight)
    set_parameters(model, equations.solve(args.ridge))

    errors: dict[str, list[dict[str, float]]] = {}
    atoms_only = load_model() if args.cell else None
    for k in sorted(held_out):
        source, atoms, _ = structures[k]
        work = atoms.copy()
        work.calc = lammps
        forces = work.get_forces()
        m = 3 * len(atoms)
        row = hessian_errors(model, atoms, hessians[k][:m, :m], forces)
        if args.cell:
            from ase.filters import FrechetCellFilter

            generalised = FrechetCellFilter(work).get_forces()
            row |= strain_hessian_errors(model, atoms, hessians[k], generalised)
            theirs = strain_hessian_errors(atoms_only, atoms, hessians[k], generalised)
            row |= {f"atoms_only_{key}": value for key, value in theirs.items()}
        errors.setdefault(source.split("_relaxed")[0], []).append(row)
    report = {}
    for source, rows in errors.items():
        report[source] = {
            key: {
                "median": float(np.median([r[key] for r in rows])),
                "p10": float(np.percentile([r[key] for r in rows], 10)),
                "p90": float(np.percentile([r[key] for r in rows], 90)),
            }
            for key in rows[0]
        } | {"n": len(rows)}
        print(source, json.dumps(report[source]))
    sizes = [len(atoms) for _, atoms, _ in structures]
    model.info = {
        "terms": "pair" if args.no_embedding else "pair + embedding",
        "fitted_to": (
            "exact Hessians over atoms and a homogeneous deformation of strained structures (atom block: matscipy's "
            "analytic EAM Hessian; strain columns: central differences of the LAMMPS EAM forces and stress), "
            "Mendelev Al–Fe potential (AlFe_mm.eam.fs)"
            if args.cell
            else "exact Hessians of matscipy's EAM on the Mendelev Al–Fe potential (AlFe_mm.eam.fs)"
        ),
        "command": "python benchmarks/fit_curvature.py"
        + (" --cell" if args.cell else "")
        + ("" if args.scale == 1 else f" --scale {args.scale:g}")
        + (" --no-embedding" if args.no_embedding else "")
        + (" --no-family-check" if args.no_family_check else "")
        + (" --all-family-cells" if args.all_family_cells else "")
        + ("" if args.ridge == 1e-9 else f" --ridge {args.ridge:g}")
        + ("" if args.out == default_out else f" --out {args.out.name}"),
        "ridge": args.ridge,
        "n_fit": len(structures) - len(held_out),
        "n_held_out": len(held_out),
        "atoms": [min(sizes), max(sizes)],
        "seeds": f"{SEED}+ (training seeds, outside the reserved evaluation ranges)",
        "family_check": {
            "family_cells": checked,
            "structures_left_out": len(bad) if not args.no_family_check else 0,
            "matches_left_out": matched,
            "not_checked": []
            if args.no_family_check or args.all_family_cells
            else sorted(f"{a}:{b}" for a, b in SLOW_FAMILIES),
        },
        "held_out_errors": report,
    }
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB) in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()

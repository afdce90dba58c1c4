"""Time the periodic neighbour graph: dense torch search vs matscipy's neighbour list (``method="library"``).

Usage: ``python benchmarks/bench_graph.py [--repeats 20] [--r-max 5.0] [--threads 1] [--no-memory] [--relax]``.

B2 AlFe (a = 2.85 Å) and its supercells, positions perturbed by N(0, 0.05 Å), float32 observations on the CPU.
Each case is timed for both methods in the same run (median of ``--repeats`` calls after one warm-up call); the
ratio is dense / library. Peak memory is the growth of the peak resident set size (``VmHWM``, reset just before) of a
fresh child process over one graph build (Linux only), so it includes the allocator's behaviour, not just the
candidate tensor.

``--relax`` also times the shipped agent in ``RLOptimizer`` on perturbed B2 supercells of 250 and 500 atoms (default
LAMMPS calculator, 10 steps after a warm-up step), with the ``auto`` graph and with the dense search forced, each in a
fresh process.
"""

import argparse
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch as th

from sb3_crystal.policies.graph import DENSE_MAX_CANDIDATES, image_range, periodic_radius_graph

#: (label, supercell repeats, batch size)
CASES = [
    ("2 (B2)", (1, 1, 1), 1),
    ("2 (B2) x batch 100", (1, 1, 1), 100),
    ("16 (2x2x2)", (2, 2, 2), 1),
    ("16 (2x2x2) x batch 100", (2, 2, 2), 100),
    ("128 (4x4x4)", (4, 4, 4), 1),
    ("500 (5x5x10)", (5, 5, 10), 1),
]


def b2_batch(repeats: tuple[int, int, int], batch: int, seed: int = 0) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Perturbed B2 supercells as a float32 (positions, cell, mask) batch."""
    a = 2.85
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in repeats), indexing="ij"), -1).reshape(-1, 3)
    frac = np.concatenate([grid, grid + 0.5]) * a
    cell = np.diag(np.array(repeats, float) * a)
    rng = np.random.default_rng(seed)
    pos = frac[None] + 0.05 * rng.standard_normal((batch, *frac.shape))
    return (
        th.tensor(pos, dtype=th.float32),
        th.tensor(np.broadcast_to(cell, (batch, 3, 3)).copy(), dtype=th.float32),
        th.ones(batch, len(frac)),
    )


def time_method(inputs, r_max: float, method: str, repeats: int) -> tuple[float, int]:
    periodic_radius_graph(*inputs, r_max=r_max, method=method)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = periodic_radius_graph(*inputs, r_max=r_max, method=method)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), graph.edge_src.numel()


def peak_memory_mb(case: int, r_max: float, method: str) -> float:
    """Growth of the max RSS of a fresh process over one graph build (MB)."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(case), method, "--r-max", str(r_max)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def memory_child(case: int, r_max: float, method: str) -> None:
    th.set_num_threads(1)
    _, repeats, batch = CASES[case]
    inputs = b2_batch(repeats, batch)
    periodic_radius_graph(*b2_batch((1, 1, 1), 1), r_max=r_max, method=method)  # load lazily allocated state
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS
        f.write("5")
    before = _proc_status_kb("VmRSS")
    periodic_radius_graph(*inputs, r_max=r_max, method=method)
    print((_proc_status_kb("VmHWM") - before) / 1024)


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def relax_child(repeats: str, method: str, steps: int = 10) -> None:
    from ase import Atoms

    from sb3_crystal.calculators import make_calculator
    from sb3_crystal.policies import graph as graph_module
    from sb3_crystal.relax import RLOptimizer

    th.set_num_threads(1)
    if method == "dense":
        graph_module.DENSE_MAX_CANDIDATES = 10**15
    b2 = Atoms("AlFe", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 2.86, pbc=True)
    atoms = b2.repeat(tuple(int(n) for n in repeats.split("x")))
    atoms.positions += 0.1 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
    atoms.calc = make_calculator("lammps")
    opt = RLOptimizer(atoms, logfile=None)
    opt.run(fmax=1e-9, steps=1)  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    opt.run(fmax=1e-9, steps=steps)
    ms = 1e3 * (time.perf_counter() - t0) / steps
    print(
        f"| {len(atoms)} ({repeats}) | {method} | {ms:.3g} | {(_proc_status_kb('VmHWM') - before) / 1024:.0f} | "
        f"{np.linalg.norm(atoms.get_forces(), axis=1).max():.3f} |"
    )


def relax_table() -> None:
    print("| atoms | graph | RLOptimizer ms/step | peak RSS growth (MB) | fmax after 11 steps (eV/Å) |")
    print("|---|---|---|---|---|")
    for repeats in ("5x5x5", "5x5x10"):
        for method in ("auto", "dense"):
            out = subprocess.run(
                [sys.executable, __file__, "--relax-child", repeats, method], capture_output=True, text=True, check=True
            )
            print(out.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--r-max", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--relax", action="store_true", help="also time RLOptimizer on 250/500-atom supercells")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--relax-child", nargs=2, metavar=("REPEATS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.r_max, args.memory_child[1])
        return
    if args.relax_child:
        relax_child(*args.relax_child)
        return
    th.set_num_threads(args.threads)

    print(
        f"# {platform.machine()}, {platform.python_version()}, torch {th.__version__} ({args.threads} threads), "
        f"r_max {args.r_max} Å, median of {args.repeats}, load average {' '.join(f'{x:.1f}' for x in _loadavg())}, "
        f"auto switches to the library above {DENSE_MAX_CANDIDATES} candidates per structure"
    )
    header = "| atoms | edges | N²·images | auto picks | dense (ms) | library (ms) | dense / library |"
    if not args.no_memory:
        header += " dense peak RSS (MB) | library peak RSS (MB) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for k, (label, repeats, batch) in enumerate(CASES):
        inputs = b2_batch(repeats, batch)
        n_max = inputs[0].shape[1]
        candidates = n_max * n_max * int(np.prod([2 * n + 1 for n in image_range(inputs[1].double(), args.r_max)]))
        t_dense, e_dense = time_method(inputs, args.r_max, "dense", args.repeats)
        t_lib, e_lib = time_method(inputs, args.r_max, "library", args.repeats)
        assert e_dense == e_lib, (label, e_dense, e_lib)
        auto = "library" if candidates > DENSE_MAX_CANDIDATES else "dense"
        row = (
            f"| {label} | {e_dense:,} | {candidates:,} | {auto} | {1e3 * t_dense:.3g} | {1e3 * t_lib:.3g} | "
            f"{t_dense / t_lib:.2g}× |"
        )
        if not args.no_memory:
            row += f" {peak_memory_mb(k, args.r_max, 'dense'):.0f} | {peak_memory_mb(k, args.r_max, 'library'):.0f} |"
        print(row, flush=True)
    if args.relax:
        relax_table()
    print(f"# load average at the end {' '.join(f'{x:.1f}' for x in _loadavg())}")


def _loadavg() -> tuple[float, ...]:
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


if __name__ == "__main__":
    main()

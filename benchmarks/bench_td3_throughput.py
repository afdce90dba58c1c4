"""TD3 training throughput (issue 3 §8): environment steps/s with one gradient update per step, batch 100.

Run by hand from the repo root::

    python benchmarks/bench_td3_throughput.py [--device cpu|cuda] [--steps 1000] [--paper-steps 3] [--threads 1]
        [--structures b2 alfe7] [--presets small paper] [--alfe7-from-paper] [--write-docs]

For B2 AlFe (2 atoms) and AlFe7 (8 atoms, bcc Fe 2×2×1 cubic cells with one Al), default ("small") and paper
TFN architecture: after a warm-up (``learning_starts`` random steps + a few updates) ``CrystalTD3.learn`` is timed in
blocks (median steps/s over blocks) and its wall time split into environment (``VecEnv.step_wait``, force calls
included), graph building (``periodic_radius_graph``; edge features separately), learning (``model.train`` minus
the graph/edge work inside it) and other (action selection, state noise, replay buffer, SB3 bookkeeping).
Memory per replay transition = nbytes of the replay buffer's arrays / capacity. ``--write-docs`` writes the table
into the "TD3 training throughput" section of docs/benchmarks.md, one subsection per device (CPU and GPU side by side).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch as th
from ase import Atoms
from ase.build import bulk

import sb3_crystal
from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.policies import graph as graph_module
from sb3_crystal.policies import tfn as tfn_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import replace_section

ROOT = Path(__file__).resolve().parents[1]
PAPER_ALFE7 = ROOT.parent / "shared" / "paper_structures" / "AlFe7.csv"
SECTION = "## TD3 training throughput"
CPU_TARGET = 30.0  # steps/s, default architecture, B2, this 2-core CPU
GPU_FACTOR = 10.0  # ≥ 10× the CPU target on one H100
SPLIT_KEYS = ("env", "graph", "edges", "learning", "other")
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


@dataclass
class Timers:
    """Accumulated seconds per part of a ``learn`` call; ``sync`` waits for the GPU (no-op on CPU)."""

    sync: Callable[[], None]
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    depth: int = 0  # nesting guard: a timed function called from another timed one of the same kind counts once
    in_train: bool = False

    def reset(self) -> None:
        self.seconds = dict.fromkeys(("env", "graph", "edges", "train", "graph_in_train", "edges_in_train"), 0.0)
        self.calls = dict.fromkeys(self.seconds, 0)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            elapsed = time.perf_counter() - start
            self.seconds[name] += elapsed
            self.calls[name] += 1
            if self.in_train and name in ("graph", "edges"):
                self.seconds[f"{name}_in_train"] += elapsed


@dataclass
class Result:
    structure: str
    n_atoms: int
    preset: str
    device: str
    timed_steps: int
    rates: list[float]
    split_ms: dict[str, float]  # per environment step
    graphs_per_step: float
    bytes_per_transition: float
    n_params: int


def machine_description(device: str) -> str:
    """CPU model, usable cores, torch version and, on CUDA, the GPU name."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{model}, {len(os.sched_getaffinity(0))} cores, torch {th.__version__} ({th.get_num_threads()} threads)"
    if device.startswith("cuda"):
        text += f", GPU {th.cuda.get_device_name(th.device(device))}"
    return text + f", sb3_crystal {sb3_crystal.__version__}"


def alfe7_cell(from_paper: bool) -> Atoms:
    """8-atom AlFe7: bcc Fe (a = 2.87 Å) 2×2×1 cubic cells with atom 0 replaced by Al, or the paper's cell."""
    if from_paper:
        from sb3_crystal.structures.io import read_structures

        return read_structures(PAPER_ALFE7)[0]
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 1))
    atoms[0].symbol = "Al"
    return atoms


def replay_bytes_per_transition(buffer: Any) -> float:
    """Total nbytes of the replay buffer's arrays divided by its capacity (transitions over all envs)."""
    total = 0
    for name in BUFFER_ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            total += sum(array.nbytes for array in value.values())
        elif value is not None:
            total += value.nbytes
    return total / (buffer.buffer_size * buffer.n_envs)


def install_timers(model: CrystalTD3, timers: Timers) -> Callable[[], None]:
    """Wrap ``VecEnv.step_wait``, ``model.train`` and the graph functions where they are looked up; returns an undo."""
    vec_env = model.get_env()
    step_wait = vec_env.step_wait
    train = model.train

    def timed_step_wait(*args: Any, **kwargs: Any) -> Any:
        with timers.timed("env"):
            return step_wait(*args, **kwargs)

    def timed_train(*args: Any, **kwargs: Any) -> Any:
        timers.in_train = True
        try:
            with timers.timed("train"):
                return train(*args, **kwargs)
        finally:
            timers.in_train = False

    def wrap(function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed_function(*args: Any, **kwargs: Any) -> Any:
            if timers.depth:
                return function(*args, **kwargs)
            timers.depth += 1
            try:
                with timers.timed(name):
                    return function(*args, **kwargs)
            finally:
                timers.depth -= 1

        return timed_function

    originals = {"periodic_radius_graph": graph_module.periodic_radius_graph, "edge_features": tfn_module.edge_features}
    wrapped = {
        "periodic_radius_graph": wrap(originals["periodic_radius_graph"], "graph"),
        "edge_features": wrap(originals["edge_features"], "edges"),
    }
    patched: list[tuple[Any, str]] = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("sb3_crystal"):
            continue
        for attribute, original in originals.items():
            if getattr(module, attribute, None) is original:
                setattr(module, attribute, wrapped[attribute])
                patched.append((module, attribute))
    vec_env.step_wait = timed_step_wait  # type: ignore[method-assign]
    model.train = timed_train  # type: ignore[method-assign]

    def undo() -> None:
        for module, attribute in patched:
            setattr(module, attribute, originals[attribute])
        del vec_env.step_wait, model.train

    return undo


def block_sizes(steps: int, blocks: int) -> list[int]:
    n_blocks = max(1, min(blocks, steps))
    return [steps // n_blocks + (1 if i < steps % n_blocks else 0) for i in range(n_blocks)]


def measure(name: str, structure: str | Atoms, preset: str, args: argparse.Namespace) -> Result:
    """Build env and model, warm up, time ``learn`` in blocks with the time split."""
    env = CrystalRelaxEnv(structures=structure, beta=0.5, epsilon=0.05, max_steps=100)
    policy_kwargs = None if preset == "small" else {"tfn_preset": preset}
    model = CrystalTD3(
        "CrystalTFNPolicy",
        env,
        batch_size=100,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        state_noise={"level": 0.2},
        policy_kwargs=policy_kwargs,
        device=args.device,
        seed=0,
    )
    cuda = model.device.type == "cuda"
    timers = Timers(sync=th.cuda.synchronize if cuda else lambda: None)
    timers.reset()
    paper = preset != "small"
    warmup = min(args.warmup, 1) if paper else args.warmup
    model.learn(args.learning_starts + warmup)
    steps = args.paper_steps if paper else args.steps
    undo = install_timers(model, timers) if not args.no_split else (lambda: None)
    rates, totals, graph_calls = [], dict.fromkeys(("wall", *SPLIT_KEYS), 0.0), 0
    try:
        for n in block_sizes(steps, args.blocks):
            timers.reset()
            timers.sync()
            start = time.perf_counter()
            model.learn(n, reset_num_timesteps=False)
            timers.sync()
            wall = time.perf_counter() - start
            rates.append(n / wall)
            s = timers.seconds
            learning = s["train"] - s["graph_in_train"] - s["edges_in_train"]
            parts = {"wall": wall, "env": s["env"], "graph": s["graph"], "edges": s["edges"], "learning": learning}
            parts["other"] = wall - s["env"] - s["graph"] - s["edges"] - learning
            graph_calls += timers.calls["graph"]
            for key, value in parts.items():
                totals[key] += value
    finally:
        undo()
    model.get_env().close()
    networks = (model.policy.actor, model.policy.critic)
    n_params = sum(p.numel() for network in networks for p in network.parameters())
    return Result(
        structure=name,
        n_atoms=env.n_max,
        preset=preset,
        device=str(model.device),
        timed_steps=steps,
        rates=rates,
        split_ms={key: 1e3 * value / steps for key, value in totals.items()},
        graphs_per_step=graph_calls / steps,
        bytes_per_transition=replay_bytes_per_transition(model.replay_buffer),
        n_params=n_params,
    )


def target_for(result: Result) -> float | None:
    if result.structure != "B2 AlFe" or result.preset != "small":
        return None
    return CPU_TARGET * (GPU_FACTOR if result.device.startswith("cuda") else 1.0)


def table_row(result: Result, split: bool) -> str:
    rate = statistics.median(result.rates)
    rate_text = f"{rate:,.1f}" if rate >= 1 else f"{rate:.4f}"
    target = target_for(result)
    verdict = "" if target is None else f" ({'meets' if rate >= target else 'below'} ≥ {target:g})"
    ms = result.split_ms
    if split:
        cells = [f"{ms[key]:.2f} ({100 * ms[key] / ms['wall']:.0f}%)" for key in SPLIT_KEYS]
        cells[1] += f", {result.graphs_per_step:.1f}×"
    else:
        cells = ["–"] * 5
    return (
        f"| {result.structure} | {result.n_atoms} | {result.preset} ({result.n_params:,} params) | {result.device} | "
        f"{result.timed_steps} | {rate_text}{verdict} | {ms['wall']:,.2f} | {' | '.join(cells)} | "
        f"{result.bytes_per_transition:,.0f} |"
    )


TABLE_HEADER = (
    "| structure | atoms | architecture | device | timed steps | env steps/s (median) | ms/step | env ms | graph ms | "
    "edge feats ms | learning ms | other ms | replay B/transition |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def docs_text(existing: str, device_heading: str, subsection: str) -> str:
    """The section with this device's subsection replaced or added; other devices' subsections are kept."""
    start = existing.find(SECTION)
    body = ""
    if start >= 0:
        end = existing.find("\n## ", start + len(SECTION))
        body = existing[start + len(SECTION) : end if end >= 0 else len(existing)]
    kept = [part for part in body.split("\n### ")[1:] if not part.startswith(device_heading)]
    intro = (
        f"{SECTION}\n\n`python benchmarks/bench_td3_throughput.py` (issue 3 §8): CrystalTD3 with CrystalTFNPolicy, one "
        "gradient update per environment step (train_freq=1, gradient_steps=1), batch 100, state noise λ = 0.2, "
        "β = 0.5 Å, ε = 0.05 eV/Å, episodes of ≤ 100 steps, default LAMMPS calculator. Times are per environment step: "
        "env = VecEnv.step_wait (force calls included), graph = periodic_radius_graph, edge feats = spherical harmonics "
        "and radial basis of the edges, learning = model.train minus its graph work, other = action selection, state "
        "noise, replay buffer and SB3 bookkeeping; n× in the graph column = graphs built per environment step. "
        f"Targets: default architecture on B2 ≥ {CPU_TARGET:g} steps/s on the "
        f"2-core CPU, ≥ {GPU_FACTOR * CPU_TARGET:g} steps/s on one H100.\n"
    )
    parts = [intro, *sorted(["### " + part.rstrip() + "\n" for part in kept] + [subsection])]
    return "\n".join(parts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda[:k])")
    parser.add_argument("--steps", type=int, default=1000, help="timed environment steps for the small preset")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed steps for the paper preset (~30 s each on CPU)")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks (median steps/s), at most one per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--structures", nargs="+", default=["b2", "alfe7"], choices=["b2", "alfe7"])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    parser.add_argument("--learning-starts", type=int, default=100, help="random steps before the first update")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates after learning_starts (paper: 1)")
    parser.add_argument("--buffer-size", type=int, default=1_000_000, help="replay buffer capacity (SB3 default)")
    parser.add_argument("--alfe7-from-paper", action="store_true", help=f"read AlFe7 from {PAPER_ALFE7}")
    parser.add_argument("--no-split", action="store_true", help="no timers (no CUDA syncs): throughput only")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not th.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if args.alfe7_from_paper and not PAPER_ALFE7.exists():
        parser.error(f"--alfe7-from-paper: {PAPER_ALFE7} not found")
    return args


def main() -> None:
    args = parse_args()
    th.set_num_threads(args.threads)
    machine = machine_description(args.device)
    structures: dict[str, Callable[[], tuple[str, str | Atoms]]] = {
        "b2": lambda: ("B2 AlFe", "AlFe-B2"),
        "alfe7": lambda: ("AlFe7 (paper cell)" if args.alfe7_from_paper else "AlFe7", alfe7_cell(args.alfe7_from_paper)),
    }
    command = "python benchmarks/bench_td3_throughput.py " + " ".join(sys.argv[1:])
    print(f"# TD3 training throughput, {time.strftime('%Y-%m-%d')}\n")
    print(f"Machine: {machine}")
    print(f"Command: `{command.strip()}`")
    print(
        f"Targets (issue 3 §8): default (small) architecture on B2 ≥ {CPU_TARGET:g} env steps/s on the 2-core CPU, "
        f"≥ {GPU_FACTOR * CPU_TARGET:g} steps/s (10×) on one H100."
    )
    if "paper" in args.presets:
        print(
            f"Paper architecture: only {args.paper_steps} timed step(s) after 1 warm-up update (~30 s per gradient "
            "step on CPU), so its figures are rough."
        )
    print(flush=True)
    results = []
    for key in args.structures:
        name, structure = structures[key]()
        for preset in args.presets:
            results.append(measure(name, structure, preset, args))
            print(table_row(results[-1], not args.no_split), flush=True)
    table = TABLE_HEADER + "\n" + "\n".join(table_row(result, not args.no_split) for result in results)
    print("\n" + table)
    if args.write_docs:
        device_heading = "GPU" if args.device.startswith("cuda") else "CPU"
        subsection = (
            f"### {device_heading}\n\n`{command.strip()}` on {machine}, {time.strftime('%Y-%m-%d')}. Median of "
            f"{args.blocks} timed blocks after {args.learning_starts} random steps and a warm-up of {args.warmup} updates "
            f"(paper architecture: {args.paper_steps} timed step(s), 1 warm-up update).\n\n{table}\n"
        )
        path = ROOT / "docs" / "benchmarks.md"
        existing = path.read_text() if path.exists() else ""
        replace_section(path, SECTION, docs_text(existing, device_heading, subsection))


if __name__ == "__main__":
    main()

"""Issue 3 §2: the cost and the learning of TFN architectures, to choose the default by measurement.

    python benchmarks/compare_architectures.py --steps 6000 --seed 0 --out results/arch_comparison

Two parts, both on B2 AlFe (batch 100, one torch thread):

1. Cost: ms per TD3 gradient update of every architecture in :data:`ARCHITECTURES`, timed in interleaved blocks
   in one process (medians; ratios against ``small`` measured in the same run, so a loaded machine shifts all
   of them alike). The paper's network gets one timed update.
2. Learning: the trainable ones (``--train``, default ``small`` and ``deep_r5``) go through the same run as
   ``pipelines/train_b2.py --variant action_noise`` (Gaussian action noise σ 0.1, hybrid reward at ε 0.05, 20 fixed
   test starts every 1000 steps) for ``--steps`` environment steps, same seed; success and ⟨L⟩ are compared per
   environment step and per second of training.

Writes ``<out>/architectures.md`` (both tables) and ``<out>/architectures.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch as th

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3

#: name -> (policy_kwargs, description)
ARCHITECTURES: dict[str, tuple[dict, str]] = {
    "small": ({}, "default: 1 gated layer, mul 8, lmax 1, uvu, r_max 4 Å"),
    "lmax2": ({"lmax": 2}, "small with lmax 2"),
    "deep_r5": ({"n_layers": 2, "r_max": 5.0}, "small with 2 gated layers and r_max 5 Å (the paper's depth and cutoff)"),
    "medium": (
        {"n_layers": 2, "mul": 16, "lmax": 2, "r_max": 5.0, "num_basis": 10, "radial_neurons": 32},
        "2 layers, mul 16, lmax 2, r_max 5 Å, uvu",
    ),
    "paper_uvu": ({"tfn_preset": "paper", "tp_mode": "uvu"}, "paper sizes with the reference code's uvu products"),
    "paper": ({"tfn_preset": "paper"}, "paper sizes, fully connected (uvw) products"),
}


def update_costs(names: list[str], blocks: int = 5) -> dict[str, dict]:
    """Median ms per gradient update (batch 100, B2) of each architecture, interleaved in one process."""
    env = CrystalRelaxEnv(structures="AlFe-B2", beta=0.5, epsilon=0.05, max_steps=100)
    models = {}
    for name in names:
        model = CrystalTD3(
            "CrystalTFNPolicy", env, learning_starts=10_000, batch_size=100, seed=0, policy_kwargs=ARCHITECTURES[name][0]
        )
        model.learn(150)  # fills the buffer without updates (the paper network's first update alone takes ~40 s)
        models[name] = model
    times: dict[str, list[float]] = {name: [] for name in names}
    for block in range(blocks):
        for name, model in models.items():
            if name == "paper" and block > 0:
                continue  # ~40 s per update on 2 CPU cores: one is enough
            n_updates = 20 if name in ("small", "lmax2", "deep_r5") else 1 if name == "paper" else 2
            start = time.perf_counter()
            model.train(gradient_steps=n_updates, batch_size=100)
            times[name].append((time.perf_counter() - start) / n_updates * 1e3)
        print(f"cost block {block + 1}/{blocks}: " + ", ".join(f"{n} {statistics.median(t):.1f} ms" for n, t in times.items()))
    return {
        name: {"ms": statistics.median(t), "params": sum(p.numel() for p in models[name].policy.parameters())}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/arch_comparison"))
    parser.add_argument("--cost", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--train", nargs="+", default=["small", "deep_r5"], choices=list(ARCHITECTURES))
    args = parser.parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    costs = update_costs(args.cost)
    base = costs.get("small", {}).get("ms")
    lines = [
        "| architecture | settings | parameters (policy) | ms per TD3 update | × small |",
        "|---|---|---:|---:|---:|",
    ]
    for name, cost in costs.items():
        ratio = f"{cost['ms'] / base:.1f}" if base else "–"
        lines.append(f"| {name} | {ARCHITECTURES[name][1]} | {cost['params']:,} | {cost['ms']:,.1f} | {ratio} |")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the B2 training pipeline
    from train_b2 import train

    histories = {}
    for name in args.train:
        start = time.time()
        kwargs = ARCHITECTURES[name][0]
        evaluation = train("action_noise", args.steps, args.seed, args.out, policy_kwargs=kwargs, tag=f"_{name}")
        histories[name] = ([row for row in evaluation.history if row.get("set", "eval") == "eval"], time.time() - start)

    checkpoints = sorted({int(row["timesteps"]) for rows, _ in histories.values() for row in rows})
    header = "| steps | " + " | ".join(f"{n}: success, ⟨L⟩" for n in histories) + " |"
    lines += ["", header, "|---:|" + "---|" * len(histories)]
    for step in checkpoints:
        cells = []
        for rows, _ in histories.values():
            row = next((r for r in rows if int(r["timesteps"]) == step), None)
            cells.append("–" if row is None else f"{float(row['success_rate']):.2f}, {float(row['relaxation_steps']):.1f}")
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    lines.append("| wall time (s) | " + " | ".join(f"{wall:,.0f}" for _, wall in histories.values()) + " |")
    (args.out / "architectures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, (rows, wall) in histories.items():
        steps = [int(r["timesteps"]) for r in rows]
        lengths = [float(r["relaxation_steps"]) for r in rows]
        axes[0].plot(steps, lengths, marker="o", ms=3, label=name)
        axes[1].plot([s / steps[-1] * wall / 60 for s in steps], lengths, marker="o", ms=3, label=name)
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("training wall time (min, this machine)")
    for axis in axes:
        axis.set_ylabel("⟨L⟩ on 20 test starts (cap 100)")
        axis.set_yscale("log")
        axis.legend()
    figure.suptitle(f"TD3 + TFN architectures on B2 AlFe, action noise, seed {args.seed}")
    figure.tight_layout()
    figure.savefig(args.out / "architectures.png", dpi=120)
    print(f"wrote {args.out / 'architectures.md'} and architectures.png")


if __name__ == "__main__":
    main()

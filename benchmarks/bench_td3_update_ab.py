"""Same-process A/B of two TD3-update speed-ups of the default TFN policy on B2 AlFe (batch 100, CPU).

    python benchmarks/bench_td3_update_ab.py [--blocks 8] [--updates 20]

* ``DepthwiseTensorProductL1`` (the l ≤ 1 tensor product written with plain products) against e3nn's
  ``TensorProduct`` (``fast_tp = None`` on every convolution: the e3nn path of the same weights);
* fused Adam (the policies' default) against PyTorch's default CPU Adam (``optimizer_kwargs={"fused": False}``).

The models are built with the same seed and filled with the same warm-up steps; their ``train`` calls are timed in
interleaved blocks, so a busy machine slows all variants alike. Prints the median ms per update and each ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch as th

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.policies.tfn import EquivariantConvolution


def make_model(env: CrystalRelaxEnv, fast_tp: bool, fused_adam: bool) -> CrystalTD3:
    policy_kwargs = {} if fused_adam else {"optimizer_kwargs": {"fused": False}}
    model = CrystalTD3("CrystalTFNPolicy", env, learning_starts=200, batch_size=100, seed=0, policy_kwargs=policy_kwargs)
    if not fast_tp:
        for module in model.policy.modules():
            if isinstance(module, EquivariantConvolution):
                module.fast_tp = None
    model.learn(250)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--updates", type=int, default=20, help="updates per timed block")
    args = parser.parse_args()
    th.set_num_threads(1)
    env = CrystalRelaxEnv(structures="AlFe-B2", beta=0.5, epsilon=0.05, max_steps=100)
    variants = {
        "both (default)": make_model(env, fast_tp=True, fused_adam=True),
        "e3nn tensor product": make_model(env, fast_tp=False, fused_adam=True),
        "unfused Adam": make_model(env, fast_tp=True, fused_adam=False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.blocks):
        for name, model in variants.items():
            start = time.perf_counter()
            model.train(gradient_steps=args.updates, batch_size=100)
            times[name].append((time.perf_counter() - start) / args.updates * 1e3)
    base = statistics.median(times["both (default)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22s} {median:7.2f} ms/update   {median / base:.2f}× the default")


if __name__ == "__main__":
    main()

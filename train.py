"""rl-zoo style training for sb3-crystal: ``python train.py --algo td3 --env CrystalRelax-v0``.

The flags are rl-zoo's (``--conf-file``, ``--tensorboard-log``, ``-n``, ``--seed``, ``--eval-freq``,
``--save-freq``, ``-i``, ``--env-kwargs``, ``--hyperparams``, ``--vec-env subproc``, ``--progress``,
``-optimize``, ...) plus ``--n-envs``; see docs/training.md.
"""

from sb3_crystal.training.zoo import main

if __name__ == "__main__":
    raise SystemExit(main())

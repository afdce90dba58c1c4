"""``python -m sb3_crystal``: the ``sb3-crystal`` command line."""

from sb3_crystal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

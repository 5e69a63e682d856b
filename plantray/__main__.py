"""``python -m plantray`` is the ``plantray`` command."""

from plantray.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

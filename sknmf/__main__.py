"""``python -m sknmf`` is the ``sknmf`` command."""

from sknmf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

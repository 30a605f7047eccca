"""`python -m tally.cli ...`: the same as the `tally` script."""

from __future__ import annotations

from tally.cli.app import main

if __name__ == "__main__":
    main()

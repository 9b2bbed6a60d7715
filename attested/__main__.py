"""``python -m attested``: the command-line interface."""

from attested.cli import main

raise SystemExit(main())

"""`python -m agent` is the same program as the `rmm-agent` console script."""

from agent.cli import main

raise SystemExit(main())

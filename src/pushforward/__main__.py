"""``python -m pushforward`` runs the command-line interface."""

from pushforward.cli import main

raise SystemExit(main())

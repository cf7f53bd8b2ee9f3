"""`python -m launcher` runs the `olp` command line (the stack launcher starts its children this way)."""

from launcher.cli import main

main()

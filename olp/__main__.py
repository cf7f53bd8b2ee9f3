"""`python -m olp` runs the command line (the embedded stack starts its children this way)."""

from olp.cli import main

main()

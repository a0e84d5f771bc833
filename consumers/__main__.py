"""`python -m consumers ...` is the same as `optout-sync ...`."""

from consumers.cli import main

main()

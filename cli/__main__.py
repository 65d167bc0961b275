"""`python -m dumplib_cli`: the same command as the `dumplib` console script."""
from .app import main

main()

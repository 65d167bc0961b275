"""The `dumplib` command-line tool (import package ``dumplib_cli``). It uses only ``dumplib``'s public API."""

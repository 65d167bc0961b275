"""Readers of the dump formats dumplib writes, shared by verification and ``dumplib info``."""

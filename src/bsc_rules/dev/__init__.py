"""Tools for development and demonstration, not needed at run time.

The event generator (:mod:`.simulate`) and `make demo` (:mod:`.demo`).
"""

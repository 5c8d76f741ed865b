"""Tools for development and demonstration, not needed at run time: the event generator and `make demo`."""

"""`gridflex serve`: settings, composition (wiring) and the run loop of one replica."""

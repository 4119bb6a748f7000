"""Adapters: everything that touches the outside world."""

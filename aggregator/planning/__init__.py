"""Slow loop: the planning request, the LP optimizer with its proportional fallback, and the
grid loop (successive linearisation checked by AC power flow).

Runs off the fast path (in a worker process in ``gridflex serve``): cvxpy holds the GIL
while it canonicalises. The fast loop (:mod:`aggregator.dispatch`) never imports this
package; an import-linter contract enforces it.
"""

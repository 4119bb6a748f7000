"""Slow loop: the planning request, the LP optimizer with its proportional fallback, and the
grid loop (successive linearisation checked by AC power flow, repair and recovery).

Runs off the fast path (in a worker process in ``gridflex serve``): building the LP, the
AC power flows and the cvxpy baseline hold the GIL for long stretches, so a thread would
stall the fast loop. The fast loop (:mod:`aggregator.dispatch`) never imports this
package; an import-linter contract enforces it.
"""

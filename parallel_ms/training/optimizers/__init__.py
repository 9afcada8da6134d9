"""Optimizers behind one interface (:class:`.base.Optimizer`): Adam, L-BFGS, Gauss-Newton with
a pluggable curvature solver, and the switches between them; the names a configuration may
use are in :mod:`.registry`, the only place that reads them."""

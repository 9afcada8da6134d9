"""Math namespaces: one coefficient formula, evaluated by torch, UFL or sympy.

A problem's conductivity and source are written once as functions ``f(x, m)`` of the coordinate
components ``x = (x_1, ..., x_d)`` and a namespace ``m`` offering ``sin, cos, exp, tanh, sqrt,
pi``. Called with :data:`TORCH` they act on tensors (the network residual), with :func:`ufl_math`
on UFL expressions (Firedrake forms), with :func:`sympy_math` on symbols (manufactured solutions).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

TORCH = SimpleNamespace(sin=torch.sin, cos=torch.cos, exp=torch.exp, tanh=torch.tanh,
                        sqrt=torch.sqrt, pi=math.pi)


def ufl_math() -> SimpleNamespace:
    import ufl
    return SimpleNamespace(sin=ufl.sin, cos=ufl.cos, exp=ufl.exp, tanh=ufl.tanh,
                           sqrt=ufl.sqrt, pi=ufl.pi)


def sympy_math() -> SimpleNamespace:
    import sympy
    return SimpleNamespace(sin=sympy.sin, cos=sympy.cos, exp=sympy.exp, tanh=sympy.tanh,
                           sqrt=sympy.sqrt, pi=sympy.pi)

"""parallel_ms: a distributed hybrid physics-informed neural network / finite-element solver
for two-scale elliptic problems (Hintermüller & Korolev, hybrid PINNs for two-scale PDEs)."""

__version__ = "0.1.0"

"""Collocation points sharded by the coarse-mesh subdomains (method.md §9).

Each rank draws the points of the coarse cells it owns, from a generator seeded by the cell
itself (its rounded centroid, the run seed and the sampling round), with counts proportional
to the cell volume. The global point set therefore does not depend on the number of ranks, each
point lives on exactly one rank, and no rank ever generates more than its own share:
memory and work per rank are O(points / ranks).

Methods: ``uniform`` (seeded uniform random), ``sobol`` (scrambled Sobol per cell, via
scipy.stats.qmc), ``gauss`` (a composite Gauss rule with equal weights: :func:`gauss_points`)
and residual-based adaptive resampling (:func:`resample_adaptive`, density
~ |r|^beta / mean |r|^beta + c, paper 003 §5.2). A :class:`BoundaryLayer` samples the points
near the boundary more densely, each point weighted by the inverse of its density
(importance sampling: the loss stays an unbiased quadrature of the integral of r^2).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy.stats import qmc

from parallel_ms.errors import UserError

if TYPE_CHECKING:
    from parallel_ms.config import SamplingConfig

METHODS = ("uniform", "sobol", "gauss")
#: an equal-weight Gauss rule on the reference simplex per dimension: the 2-point
#: Gauss–Legendre rule on (0, 1) (exact for cubics), the 3-point rule at (1/6, 1/6),
#: (2/3, 1/6), (1/6, 2/3) on the unit triangle (exact for quadratics)
_GAUSS_RULES = {1: np.array([[0.5 - 0.5 / np.sqrt(3)], [0.5 + 0.5 / np.sqrt(3)]]),
                2: np.array([[1 / 6, 1 / 6], [2 / 3, 1 / 6], [1 / 6, 2 / 3]])}
_GRID = float(2 ** 24)  # centroid rounding for the cell seeds
# random streams besides the interior sampling rounds 0, 1, 2, ...
_BOUNDARY_STREAM = 2 ** 31 - 1
_VALIDATION_STREAM = 2 ** 31 - 2
_KEEP_STREAM = 2 ** 30


@dataclass
class Shard:
    """This rank's collocation points (NumPy, float64) and the global counts; with a
    :class:`BoundaryLayer`, the interior points' quadrature weights and their global sum."""

    interior: np.ndarray        # (m, d)
    boundary: np.ndarray        # (m_b, d)
    n_interior: int             # global
    n_boundary: int             # global
    weights: np.ndarray | None = None   # (m,): 1 / (relative density) of each interior point
    weight_total: float | None = None   # their global sum (None: n_interior, equal weights)

    def with_interior(self, interior: np.ndarray, comm: object) -> "Shard":
        """These boundary points with new interior ones, equally weighted (collective: their
        global count)."""
        return Shard(interior, self.boundary, comm.allreduce(len(interior)),  # type: ignore
                     self.n_boundary)


@dataclass(frozen=True)
class BoundaryLayer:
    """Importance sampling near the boundary of (0,1)^d: within ``width`` of it the interior
    points are ``density`` times as dense, and each point's weight is the inverse of its
    relative density (1 / ``density`` inside, 1 outside), so sum_i w_i r_i^2 / sum_i w_i is
    still a quadrature of the mean of r^2 over the domain (``sampling.layer_width``,
    ``sampling.layer_density``; docs/gauss-newton.md, "The paper's network": with a hard
    boundary condition most of r^2 lives in a thin layer at the boundary, whose few points
    make the loss of fresh points noisy). ``width`` = 0: off."""

    width: float = 0.0
    density: float = 1.0

    @classmethod
    def of(cls, sampling: "SamplingConfig") -> "BoundaryLayer":
        """The layer of ``sampling.layer_width`` and ``sampling.layer_density``."""
        return cls(sampling.layer_width, sampling.layer_density)

    def points(self, interior: float, dim: int) -> float:
        """The expected global number of interior points for ``sampling.interior`` =
        ``interior``: times 1 + (density - 1) x the layer's volume 1 - (1 - 2 width)^dim."""
        extra = (self.density - 1) * (1 - (1 - 2 * self.width) ** dim) if self.active else 0
        return interior * (1 + extra)

    @property
    def active(self) -> bool:
        return self.width > 0 and self.density > 1

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Which points (n, d) lie within ``width`` of the boundary."""
        return np.minimum(x, 1 - x).min(axis=1) < self.width

    def weigh(self, shard: Shard, comm: object) -> Shard:
        """``shard`` with its interior points' weights and their global sum (exact: from the
        global counts inside and outside the layer, the same bits on every rank)."""
        if not self.active:
            return shard
        inside = self.inside(shard.interior.reshape(len(shard.interior), -1))
        n_in = comm.allreduce(int(inside.sum()))  # type: ignore[attr-defined]
        return dataclasses.replace(shard, weights=np.where(inside, 1 / self.density, 1.0),
                                   weight_total=(shard.n_interior - n_in) + n_in / self.density)


def _generator(seed: int, round_: int, anchor: np.ndarray) -> np.random.Generator:
    key = np.round(np.asarray(anchor, dtype=float).ravel() * _GRID).astype(np.int64)
    return np.random.default_rng(np.random.SeedSequence([seed, round_, *key.tolist()]))


def _unit_samples(rng: np.random.Generator, n: int, d: int, method: str) -> np.ndarray:
    if method == "uniform":
        return rng.random((n, d))
    if method == "sobol":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # n need not be a power of 2
            return qmc.Sobol(d, scramble=True, seed=rng).random(n)
    raise UserError(f"sampling method '{method}' is unknown (allowed: {', '.join(METHODS)})",
                    collective=True)


def _in_simplex(vertices: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Map unit-cube samples u (n, d) to the simplex with the given vertices (d+1, d)."""
    if vertices.shape[1] == 2:
        fold = u.sum(1) > 1
        u = np.where(fold[:, None], 1 - u, u)
    return vertices[0] + u @ (vertices[1:] - vertices[0])


def _cells(mesh: object) -> np.ndarray:
    """Owned cells with their vertices in lexicographic order, so a cell maps its samples the
    same way whatever the partition (the vertex order of a cell depends on it)."""
    from parallel_ms.coarse.mesh import owned_cell_vertices   # Firedrake: only with a mesh
    return np.array([c[np.lexsort(c.T[::-1])] for c in owned_cell_vertices(mesh)])


def _volume(vertices: np.ndarray) -> float:
    edges = vertices[1:] - vertices[0]
    return abs(np.linalg.det(edges)) / (2 if vertices.shape[1] == 2 else 1)


def _count(rng: np.random.Generator, expected: float) -> int:
    """floor(expected) + Bernoulli(fractional part): unbiased and rank independent."""
    base = int(np.floor(expected))
    return base + int(rng.random() < expected - base)


def gauss_points(vertices: np.ndarray, n: float) -> np.ndarray:
    """About n points of a composite Gauss rule with equal weights in the simplex ``vertices``:
    the simplex cut into m^d congruent ones (m from n), the rule :data:`_GAUSS_RULES` in each.
    Equal weights keep the objective's sums unweighted; on equal cells every cell gets the
    same m, so the global set is a quadrature rule of the domain, whatever the partition. For
    the energy form of the residual (``loss.form``), whose integrand has the interfaces of K:
    points that resolve them integrate it to the rule's order, where random points do not."""
    d = vertices.shape[1]
    rule = _GAUSS_RULES[d]
    # rounded up from just below a half: equal cells whose volumes differ in the last bit
    # (n = 37.5 and 37.4999...) get the same m
    m = max(1, int(np.floor((n / len(rule)) ** (1 / d) + 0.5 + 1e-9)))
    if d == 1:
        lows = np.arange(m)[:, None, None].astype(float)
        sub = (lows + rule[None]) / m                                   # (m, 2, 1)
    else:
        i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        up = (i + j <= m - 1).ravel()
        down = (i + j <= m - 2).ravel()
        base = np.stack([i.ravel(), j.ravel()], 1).astype(float)
        # upward (i, j), (i+1, j), (i, j+1); downward (i+1, j+1), (i, j+1), (i+1, j)
        ups = base[up][:, None] + rule[None]
        downs = base[down][:, None] + 1 - rule[None]
        sub = np.concatenate([ups, downs]) / m
    return vertices[0] + sub.reshape(-1, d) @ (vertices[1:] - vertices[0])


def interior_points(mesh: object, total: int, method: str, seed: int,
                    round_: int = 0, oversample: int = 1,
                    layer: BoundaryLayer = BoundaryLayer()) -> list[np.ndarray]:
    """Per owned cell, ~ total * |cell| * oversample points in the cell (|Omega| = 1); with an
    active ``layer``, in the cells it meets, (layer.density - 1) times as many more in the
    part of the cell inside it (drawn in the cell, those outside the layer dropped)."""
    out = []
    for cell in _cells(mesh):
        if method == "gauss":
            out.append(gauss_points(cell, total * _volume(cell) * oversample))
            continue
        rng = _generator(seed, round_, cell.mean(0))
        n = _count(rng, total * _volume(cell) * oversample)
        points = _in_simplex(cell, _unit_samples(rng, n, cell.shape[1], method))
        # a cell meets the layer iff a vertex does (the distance to the boundary is concave)
        if layer.active and layer.inside(cell).any():
            extra = _count(rng, total * _volume(cell) * oversample * (layer.density - 1))
            more = _in_simplex(cell, _unit_samples(rng, extra, cell.shape[1], method))
            points = np.concatenate([points, more[layer.inside(more)]])
        out.append(points)
    return out


def boundary_points(mesh: object, total: int, method: str, seed: int) -> np.ndarray:
    """Points on the boundary of (0,1)^d, drawn per boundary facet of an owned cell.

    1D: the end points 0 and 1 (``total`` is ignored). 2D: a cell edge lies on the boundary of
    the unit square when both end points share a coordinate equal to 0 or 1; it gets
    ~ total * length / 4 points."""
    pts = []
    for cell in _cells(mesh):
        if cell.shape[1] == 1:
            pts += [v for v in cell if v[0] in (0.0, 1.0)]
            continue
        for a, b in ((0, 1), (1, 2), (0, 2)):
            va, vb = cell[a], cell[b]
            on_side = [(abs(va[i] - s) < 1e-12 and abs(vb[i] - s) < 1e-12)
                       for i in range(2) for s in (0.0, 1.0)]
            if any(on_side):
                rng = _generator(seed, _BOUNDARY_STREAM, (va + vb) / 2)
                n = _count(rng, total * np.linalg.norm(vb - va) / 4)
                t = (gauss_points(np.array([[0.0], [1.0]]), n) if method == "gauss"
                     else _unit_samples(rng, n, 1, method))
                pts += list(va + t * (vb - va))
    dim = mesh.geometric_dimension  # type: ignore[attr-defined]
    return np.array(pts, dtype=float).reshape(-1, dim)


def interior_sample(mesh: object, n_interior: int, method: str, seed: int,
                    round_: int = 0, layer: BoundaryLayer = BoundaryLayer()) -> np.ndarray:
    """This rank's share of the global interior point set of sampling round ``round_``."""
    return np.concatenate(interior_points(mesh, n_interior, method, seed, round_,
                                          layer=layer) or
                          [np.empty((0, mesh.geometric_dimension))])  # type: ignore


def validation_sample(mesh: object, n_interior: int, method: str, seed: int) -> np.ndarray:
    """This rank's share of the fixed validation point set (its own random stream, drawn once):
    interior points on which the best iterate is chosen (``sampling.validation``)."""
    return interior_sample(mesh, n_interior, method, seed, _VALIDATION_STREAM)


def sample(mesh: object, n_interior: int, n_boundary: int, method: str, seed: int,
           comm: object, layer: BoundaryLayer = BoundaryLayer()) -> Shard:
    """This rank's share of the global collocation point set."""
    interior = interior_sample(mesh, n_interior, method, seed, layer=layer)
    boundary = boundary_points(mesh, n_boundary, method, seed)
    return layer.weigh(Shard(interior, boundary, comm.allreduce(len(interior)),  # type: ignore
                             comm.allreduce(len(boundary))), comm)  # type: ignore


def resample_adaptive(mesh: object, n_interior: int, seed: int, round_: int,
                      residual: Callable[[np.ndarray], np.ndarray], beta: float, c: float,
                      comm: object, oversample: int = 4) -> np.ndarray:
    """Residual-based adaptive resampling (RAD, paper 003 §5.2): density ~ |r|^beta / mean + c.

    Candidates: ``oversample`` x the uniform density per owned cell (seeded by cell and round).
    A cell receives ~ n_interior x (its share of the total density mass) points (randomised
    rounding), drawn from its candidates with probabilities ~ density (with replacement only
    when a cell asks for more points than it has candidates). The mean and the total mass are
    all-reduced, so the point set does not depend on the number of ranks."""
    cells = interior_points(mesh, n_interior, "uniform", seed, round_, oversample)
    dim = mesh.geometric_dimension  # type: ignore[attr-defined]
    cand = np.concatenate(cells or [np.empty((0, dim))])
    w = np.abs(residual(cand)) ** beta
    mean = comm.allreduce(float(w.sum())) / max(comm.allreduce(len(w)), 1)  # type: ignore
    density = w / mean + c if mean > 0 else np.ones(len(w))
    total = comm.allreduce(float(density.sum()))  # type: ignore
    out, start = [], 0
    for pts in cells:
        dens = density[start:start + len(pts)]
        start += len(pts)
        if not len(pts):
            continue
        rng = _generator(seed, _KEEP_STREAM + round_, pts.mean(0))
        n = _count(rng, n_interior * dens.sum() / total)
        out.append(pts[rng.choice(len(pts), n, replace=n > len(pts), p=dens / dens.sum())])
    return np.concatenate(out or [np.empty((0, dim))])

"""Training data of the subspace neural operator (paper 004): coefficient patches of a coarse
neighbourhood and their local GMsFEM spectral bases.

A *patch* is the square [-H, H]^2 around an interior vertex of the coarse mesh
(:func:`parallel_ms.coarse.mesh.unit_mesh`: n x n squares of side H = 1/n, two triangles each,
diagonal "left"), carrying the fine P1 grid of the nested fine mesh
(:mod:`parallel_ms.multiscale.nested`: ``refinement`` = m fine cells per coarse cell and
direction, the same diagonal), i.e. (2m+1)^2 nodes. The neighbourhood omega is the support of
the vertex's coarse hat function chi (six coarse triangles); the nodes of its closure form the
patch's *mask*.

The local spectral problem of GMsFEM (Efendiev, Galvis & Hou 2013, J. Comput. Phys. 251, the
"spectral basis functions" of §4 without snapshots; Neumann on the boundary of omega):

    int_omega K grad phi . grad v = lambda int_omega K~ phi v   for all fine P1 v on omega,
    K~ = K sum_j |grad chi_j|^2                                   (sum over the coarse vertices)

i.e. A_omega phi = lambda S_omega phi; the L eigenvectors of the smallest eigenvalues span the
neighbourhood's local space (the coarse basis functions are chi phi_k). A_omega and S_omega are
assembled by Firedrake on a COMM_SELF mesh of the patch, built once; a sample only changes the
values of K at the quadrature points (no form is compiled per sample).

A sample's coefficient is a high-contrast case of :mod:`parallel_ms.problems.cases`
(``random-inclusions-2d`` with a random seed, ``channels-2d``; contrast log-uniform) seen
through a random rigid motion: K_patch(y) = K(c + R(theta) y). The network's input is
log10 K at the grid nodes, its target the L eigenvectors on the grid (zero outside omega).

The eigenpairs come from GMsFEM's own local eigensolver
(:func:`parallel_ms.multiscale.spectral.smallest_pairs`); with GMsFEM's quadrature the patch
matrices are those of :class:`parallel_ms.multiscale.spectral.LocalProblems` for the same
neighbourhood (tests/test_subspace_operator.py). :class:`NeighbourhoodPatches` maps the grid to
the fine dofs of the neighbourhoods of a distributed GMsFEM space.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from mpi4py import MPI

from parallel_ms.multiscale.operator import predict_bases
from parallel_ms.multiscale.spectral import local_forms, smallest_pairs
from parallel_ms.problems import Problem, get_case

#: the families samples are drawn from (a case of :mod:`parallel_ms.problems.cases` each)
FAMILIES = ("random-inclusions-2d", "channels-2d")
#: the ``random-inclusions-2d`` seed never drawn for training: the case's default, kept for
#: held-out evaluation (``gmsfem --case random-inclusions-2d``)
HELD_OUT_SEED = 0


class PatchProblem:
    """The local spectral problem of one coarse neighbourhood on the patch's fine P1 grid,
    assembled by Firedrake on ``MPI.COMM_SELF`` (one per rank; nothing collective).

    ``cells``: coarse cells per direction (H = 1/cells); ``refinement``: fine cells per coarse
    cell and direction (m); ``degrees``: the quadrature degrees of A_omega and S_omega, at
    whose points K is sampled. (4, 4) by default; :mod:`.spectral` integrates the exact K with
    UFL's estimated degrees (8 and 10 for ``channels-2d``, 6 and 8 for
    ``random-inclusions-2d``), with which the matrices agree to rounding. The spans of the
    first 4 eigenvectors move by L_SAL ~ 1e-6 ... 1e-4 between the two rules. The forms are
    GMsFEM's (:func:`~parallel_ms.multiscale.spectral.local_forms`), restricted to omega.
    """

    def __init__(self, cells: int, refinement: int,
                 degrees: tuple[int, int] = (4, 4)) -> None:
        import finat.ufl
        import firedrake as fd
        import ufl
        from firedrake.assemble import get_assembler

        self.cells, self.refinement, self.degrees = cells, refinement, tuple(degrees)
        H = self.H = 1.0 / cells
        self.size = 2 * refinement + 1                      #: grid nodes per direction
        fine = fd.RectangleMesh(2 * refinement, 2 * refinement, H, H, originX=-H, originY=-H,
                                diagonal="left", comm=MPI.COMM_SELF)
        coarse = fd.RectangleMesh(2, 2, H, H, originX=-H, originY=-H, diagonal="left",
                                  comm=MPI.COMM_SELF)
        V, Vc = fd.FunctionSpace(fine, "CG", 1), fd.FunctionSpace(coarse, "CG", 1)
        hats = []                        # the 9 coarse hat functions, exact in fine P1 (nested)
        for j in range(Vc.dim()):
            chi = fd.Function(Vc)
            chi.dat.data[j] = 1.0
            hats.append(fd.assemble(fd.interpolate(chi, V)))
        centre = int(np.argmin(np.linalg.norm(_nodes(fd, coarse), axis=1)))
        # omega = the support of the centre's hat: a cell is inside iff chi > 0 at its midpoint
        inside = fd.Function(fd.FunctionSpace(fine, "DG", 0)).interpolate(
            ufl.conditional(ufl.gt(hats[centre], 1e-12), 1.0, 0.0))
        #: K on the quadrature points of each degree, and the patch coordinates of those points
        self._k: dict[int, tuple[fd.Function, np.ndarray]] = {}
        for degree in sorted(set(self.degrees)):
            element = finat.ufl.FiniteElement("Quadrature", fine.ufl_cell(), degree=degree,
                                              quad_scheme="default")
            points = fd.Function(fd.FunctionSpace(fine, finat.ufl.VectorElement(element)))
            self._k[degree] = (fd.Function(fd.FunctionSpace(fine, element)),
                               points.interpolate(ufl.SpatialCoordinate(fine)).dat.data_ro.copy())
        grad_sum = sum(ufl.inner(ufl.grad(chi), ufl.grad(chi)) for chi in hats)
        forms = local_forms(V, tuple(self._k[d][0] for d in self.degrees), grad_sum, inside,
                            tuple(fd.dx(degree=d) for d in self.degrees))
        # assemblers built once: a sample re-runs their kernels without re-processing the forms
        self._assemblers = [get_assembler(form, mat_type="aij") for form in forms]
        self._tensors = [assembler.allocate() for assembler in self._assemblers]
        # Firedrake dof -> grid node (row-major, y down the rows), and the dofs of closure(omega)
        ij = np.rint((_nodes(fd, fine) + H) / (H / refinement)).astype(int)
        grid = ij[:, 1] * self.size + ij[:, 0]
        dofs = np.unique(V.cell_node_map().values[inside.dat.data_ro > 0.5])
        self._dofs = dofs[np.argsort(grid[dofs])]           # in the mask's (row-major) order
        self._picks = [_restriction(tensor.petscmat, self._dofs) for tensor in self._tensors]
        mask = np.zeros(self.size * self.size, dtype=bool)
        mask[grid[dofs]] = True
        self.mask = mask.reshape(self.size, self.size)      #: grid nodes of closure(omega)
        h = np.linspace(-H, H, self.size)
        #: patch coordinates y of the grid nodes, (size, size, 2), [row = y, column = x]
        self.grid_points = np.stack(np.meshgrid(h, h, indexing="xy"), axis=-1)

    @property
    def quadrature_points(self) -> list[np.ndarray]:
        """The point sets (patch coordinates) at which :meth:`matrices` samples K."""
        return [points for _, points in self._k.values()]

    def matrices(self, coefficient: Callable[[np.ndarray], np.ndarray]
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """A_omega and S_omega (sparse) on the nodes of closure(omega) in the mask's order
        (row-major), for K = ``coefficient`` (a function of patch coordinates)."""
        for k, points in self._k.values():
            k.dat.data[:] = coefficient(points)
        out = []
        for assembler, tensor, pick in zip(self._assemblers, self._tensors, self._picks):
            _, _, values = assembler.assemble(tensor=tensor).petscmat.getValuesCSR()
            out.append(sp.csr_matrix((values[pick.data], pick.indices.copy(),
                                      pick.indptr.copy()), shape=pick.shape))
        return out[0], out[1]

    def vectors_on_grid(self, vectors: np.ndarray) -> np.ndarray:
        """Columns on the nodes of closure(omega) (the mask's order) as images
        (k, size, size), zero outside closure(omega)."""
        grid = np.zeros((vectors.shape[1], self.size, self.size))
        grid[:, self.mask] = vectors.T
        return grid

    def spectral_basis(self, coefficient: Callable[[np.ndarray], np.ndarray], count: int,
                       eigensolver: str = "sparse") -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` smallest eigenpairs of A_omega phi = lambda S_omega phi by GMsFEM's
        local eigensolver (:func:`~parallel_ms.multiscale.spectral.smallest_pairs`:
        ``sparse`` ARPACK shift-invert or ``dense`` LAPACK): eigenvalues (count,) and
        S-orthonormal eigenvectors on the grid, (count, size, size), zero outside
        closure(omega)."""
        values, vectors = smallest_pairs(*self.matrices(coefficient), count, eigensolver)
        return values, self.vectors_on_grid(vectors)


def _restriction(mat: object, dofs: np.ndarray) -> sp.csr_matrix:
    """The rows and columns ``dofs`` of the (fixed) pattern of a sequential AIJ matrix, with
    the position of each entry in the matrix's CSR values as its value: restricting an
    assembled matrix is then one fancy index."""
    indptr, indices, _ = mat.getValuesCSR()
    position = sp.csr_matrix((np.arange(1.0, len(indices) + 1), indices, indptr),
                             shape=mat.getSize())[dofs][:, dofs]
    position.sort_indices()
    position.data = position.data.astype(np.int64) - 1
    return position


def _nodes(fd: object, mesh: object) -> np.ndarray:
    """Coordinates of the P1 dofs of ``mesh`` in dof order, (n, 2)."""
    V = fd.VectorFunctionSpace(mesh, "CG", 1)
    return fd.Function(V).interpolate(fd.SpatialCoordinate(mesh)).dat.data_ro.copy()


@dataclass(frozen=True)
class PatchCoefficient:
    """K on a patch: K_patch(y) = problem.K(centre + R(angle) y)."""

    problem: Problem
    centre: tuple[float, float]
    angle: float = 0.0

    def points(self, y: np.ndarray) -> np.ndarray:
        """The domain points centre + R(angle) y of patch coordinates ``y`` (..., 2), (M, 2)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        rotated = y @ np.array([[c, s], [-s, c]])            # rows: (R y)^T
        return np.asarray(self.centre) + rotated.reshape(-1, 2)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """K at patch coordinates ``y`` (..., 2)."""
        return self.problem.k(torch.from_numpy(self.points(y))).numpy().reshape(y.shape[:-1])


@dataclass(frozen=True)
class PatchSampler:
    """Random coefficient patches: sample ``index`` is a function of (seed, index) alone, so any
    rank can draw any sample. A family is drawn uniformly from ``families``, the contrast
    log-uniformly from ``contrast``, the centre uniformly where the rotated patch stays inside
    (0,1)^2, the angle uniformly in [0, 2 pi) (``rotate``); ``random-inclusions-2d`` with a case
    seed >= 1 (:data:`HELD_OUT_SEED` is never drawn)."""

    cells: int
    families: tuple[str, ...] = FAMILIES
    contrast: tuple[float, float] = (1e2, 1e4)
    seed: int = 0
    rotate: bool = True

    def __call__(self, index: int) -> PatchCoefficient:
        rng = np.random.default_rng([self.seed, index])
        family = self.families[int(rng.integers(len(self.families)))]
        contrast = float(10 ** rng.uniform(*np.log10(self.contrast)))
        if family == "random-inclusions-2d":
            problem = get_case(family, contrast=contrast,
                               seed=float(rng.integers(HELD_OUT_SEED + 1, 2 ** 31)))
        else:
            problem = get_case(family, contrast=contrast)
        reach = math.sqrt(2.0) / self.cells if self.rotate else 1.0 / self.cells
        centre = rng.uniform(reach, 1.0 - reach, 2)
        angle = float(rng.uniform(0.0, 2 * math.pi)) if self.rotate else 0.0
        return PatchCoefficient(problem, (float(centre[0]), float(centre[1])), angle)


class NeighbourhoodPatches:
    """The patches of this rank's neighbourhoods of a distributed GMsFEM space
    (:class:`~parallel_ms.multiscale.neighbourhoods.Neighbourhoods` on
    :func:`~parallel_ms.multiscale.nested.nested_meshes` with the patch's cells and
    refinement): the grid node of each fine dof of the n-th (``hoods.dofs[n]``, global
    numbers; their coordinates are fetched from the ranks that own them by one PETSc scatter
    of the fine mesh's coordinates). This depends on the meshes alone: built once, it gives the
    operator's bases of any coefficient on them (:meth:`operator_pairs`), as the local
    problems of :mod:`.spectral` are solved anew for each."""

    def __init__(self, patch: PatchProblem, meshes: object, hoods: object) -> None:
        from petsc4py import PETSc

        self.patch = patch
        #: the centre (coarse vertex) of each neighbourhood
        self.centres = [(float(x), float(y)) for x, y in hoods.points]
        counts = [len(dofs) for dofs in hoods.dofs]
        dim = meshes.fine.geometric_dimension
        # the coordinate field is vector P1, numbered as the fine P1 space (block size dim)
        wanted = PETSc.IS().createBlock(dim, np.concatenate(
            [np.zeros(0, dtype=PETSc.IntType), *hoods.dofs]).astype(PETSc.IntType),
            comm=PETSc.COMM_SELF)
        with meshes.fine.coordinates.dat.vec_ro as vec:
            out = PETSc.Vec().createSeq(wanted.getSize(), comm=PETSc.COMM_SELF)
            scatter = PETSc.Scatter().create(vec, wanted, out, None)
            scatter.scatter(vec, out, addv=PETSc.InsertMode.INSERT_VALUES,
                            mode=PETSc.ScatterMode.FORWARD)
            points = np.split(out.array.reshape(-1, dim).copy(), np.cumsum(counts)[:-1])
            for obj in (scatter, out, wanted):
                obj.destroy()
        h = patch.H / patch.refinement
        #: flat grid node (row-major) of each fine dof of each neighbourhood
        self.grid: list[np.ndarray] = []
        for centre, at in zip(hoods.points, points):
            ij = np.rint((at - centre + patch.H) / h).astype(int)
            node = ij[:, 1] * patch.size + ij[:, 0]
            if (ij < 0).any() or (ij >= patch.size).any() or not patch.mask.flat[node].all():
                raise ValueError("a fine dof of a neighbourhood is not a node of its patch "
                                 "(cells or refinement differ from the patch's)")
            self.grid.append(node)
        #: position of each grid node among the mask's nodes
        self._position = np.cumsum(patch.mask.ravel()) - 1

    def coefficients(self, problem: Problem) -> list[PatchCoefficient]:
        """The coefficient of ``problem`` around each neighbourhood's coarse vertex."""
        return [PatchCoefficient(problem, centre) for centre in self.centres]

    def images(self, problem: Problem) -> np.ndarray:
        """log10 K of ``problem`` on every neighbourhood's grid, (N, 1, size, size)."""
        return log_k_images(self.patch, self.coefficients(problem))

    def to_grid(self, n: int, vectors: np.ndarray) -> np.ndarray:
        """Vectors at the fine dofs of neighbourhood ``n`` (columns, (dofs, k)) as images
        (k, size, size), zero outside omega."""
        out = np.zeros((vectors.shape[1], self.patch.size ** 2))
        out[:, self.grid[n]] = vectors.T
        return out.reshape(-1, self.patch.size, self.patch.size)

    def from_grid(self, n: int, vectors: np.ndarray) -> np.ndarray:
        """Vectors on the mask's nodes (mask order, (n_mask, k), as
        :func:`~parallel_ms.multiscale.operator.orthonormal_basis` returns them) at the fine
        dofs of neighbourhood ``n``, (dofs, k)."""
        return vectors[self._position[self.grid[n]]]

    def operator_pairs(self, model: torch.nn.Module, problem: Problem
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The operator's bases of these neighbourhoods for the coefficient of ``problem``
        (its K at the grid nodes, one batched forward + QR) in the form of
        :meth:`~parallel_ms.multiscale.spectral.LocalProblems.eigenpairs`, the input of
        :class:`~parallel_ms.multiscale.space.MultiscaleSpace`: (eigenvalues: NaN, the
        predictions carry none; columns at the fine dofs, Euclidean-orthonormal) each."""
        dtype = next(model.parameters()).dtype
        q = predict_bases(model, torch.from_numpy(self.images(problem)).to(dtype),
                          torch.from_numpy(self.patch.mask)).double().numpy()
        return [(np.full(q.shape[2], np.nan), self.from_grid(n, basis))
                for n, basis in enumerate(q)]


@dataclass
class PatchData:
    """Samples as tensors (this rank's share): ``index`` (N,) their sample numbers,
    ``log_k`` (N, 1, s, s) log10 K at the grid nodes, ``basis`` (N, L, s, s) the target
    eigenvectors, ``eigenvalues`` (N, L); ``mask`` (s, s) the nodes of closure(omega)."""

    index: torch.Tensor
    log_k: torch.Tensor
    basis: torch.Tensor
    eigenvalues: torch.Tensor
    mask: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device: torch.device, dtype: torch.dtype) -> "PatchData":
        return PatchData(self.index.to(device), self.log_k.to(device, dtype),
                         self.basis.to(device, dtype), self.eigenvalues.to(device, dtype),
                         self.mask.to(device), self.seconds)


def log_k_images(patch: PatchProblem, coefficients: list[PatchCoefficient]) -> np.ndarray:
    """The network inputs: log10 K at the grid nodes of each patch, (N, 1, size, size); the
    patches of one problem (all neighbourhoods of a case) in one evaluation of its K (a
    formula evaluated by torch: per patch, the call overhead outweighs its 289 points)."""
    s = patch.size
    out = np.empty((len(coefficients), 1, s, s))
    by_problem: dict[int, list[int]] = {}
    for n, coefficient in enumerate(coefficients):
        by_problem.setdefault(id(coefficient.problem), []).append(n)
    for members in by_problem.values():
        x = np.concatenate([coefficients[n].points(patch.grid_points) for n in members])
        k = coefficients[members[0]].problem.k(torch.from_numpy(x)).numpy()
        out[members, 0] = np.log10(k).reshape(len(members), s, s)
    return out


def build_data(patch: PatchProblem, coefficients: list[PatchCoefficient], count: int,
               index: list[int] | None = None) -> PatchData:
    """Inputs and ``count`` target eigenvectors for ``coefficients`` (sample numbers
    ``index``, default 0, 1, ...); ``seconds``: the time spent on the images (K at the nodes)
    and in the eigensolves (K at the quadrature points, assembly, eigh)."""
    images, bases, values = [], [], []
    seconds = {"image": 0.0, "eigensolve": 0.0}
    for coefficient in coefficients:
        t0 = time.perf_counter()
        images.append(log_k_images(patch, [coefficient]))
        t1 = time.perf_counter()
        lam, phi = patch.spectral_basis(coefficient, count)
        seconds["image"] += t1 - t0
        seconds["eigensolve"] += time.perf_counter() - t1
        bases.append(phi)
        values.append(lam)
    s = patch.size
    return PatchData(
        torch.as_tensor(index if index is not None else range(len(coefficients)),
                        dtype=torch.int64),
        torch.from_numpy(np.array(images).reshape(-1, 1, s, s)),
        torch.from_numpy(np.array(bases).reshape(-1, count, s, s)),
        torch.from_numpy(np.array(values).reshape(-1, count)),
        torch.from_numpy(patch.mask.copy()), seconds)


def sample_shard(patch: PatchProblem, sampler: PatchSampler, total: int, count: int,
                 comm: MPI.Comm) -> PatchData:
    """This rank's share of samples 0 ... total-1: the numbers ``i`` with ``i % size == rank``
    (each sample is drawn and solved once in the whole job; the global set does not depend on
    the number of ranks)."""
    index = list(range(comm.rank, total, comm.size))
    return build_data(patch, [sampler(i) for i in index], count, index)

"""The Generalized Multiscale Finite Element Method (GMsFEM; Efendiev, Galvis & Hou 2013,
J. Comput. Phys. 251, "Generalized multiscale finite element methods (GMsFEM)") on the
distributed coarse mesh.

* :mod:`.nested`: the coarse mesh (a distributed DMPlex) and the fine mesh refined from it, each
  fine cell on the rank of its coarse cell; the coarse P1 hat functions chi_i (the partition of
  unity) prolonged exactly to the fine P1 space;
* :mod:`.neighbourhoods`: the neighbourhood omega_i of every interior coarse vertex (the coarse
  cells around it), its fine dofs and chi_i on them, grouped into colour classes of
  neighbourhoods whose closures do not meet;
* :mod:`.spectral`: the local spectral problems A_omega phi = lambda S_omega phi, one per
  neighbourhood, solved by the rank that owns its coarse vertex (ARPACK or LAPACK);
* :mod:`.space`: the basis matrix R (fine dofs x multiscale dofs, columns chi_i phi_k), the
  coarse matrix R^T A R (PtAP), the load R^T b, the coarse solve and u_ms = R u_c;
* :mod:`.solver`: all of it for the lifted problem (4.8) of a case;
* :mod:`.study`: GMsFEM against the fine solution and the P1 coarse solution with an upscaled
  coefficient (``python -m parallel_ms gmsfem``), :mod:`.plots` its figure.
"""

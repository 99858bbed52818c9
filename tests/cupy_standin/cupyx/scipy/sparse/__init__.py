"""cupyx.scipy.sparse for the CuPy stand-in: ``csr_matrix`` and ``csc_matrix`` over stand-in
cupy arrays, with CuPy's transfers, synchronisations and refusals (see ``_compressed.py``
and ``../../../README.md``).

Implemented: ``spmatrix``, ``csr_matrix``, ``csc_matrix``, ``issparse``, ``isspmatrix``,
``isspmatrix_csr``, ``isspmatrix_csc``, ``SparseWarning``, ``SparseEfficiencyWarning``.
The other public names of the real module (13.6 and 14.2) raise NotImplementedError.
"""
from scipy.sparse import SparseEfficiencyWarning, SparseWarning  # noqa: F401

from ._compressed import csc_matrix, csr_matrix, spmatrix

_NOT_IMPLEMENTED = frozenset((
    "bmat", "coo_matrix", "dia_matrix", "diags", "eye", "find", "hstack", "identity",
    "isspmatrix_coo", "isspmatrix_dia", "kron", "kronsum", "rand", "random", "spdiags",
    "tril", "triu", "vstack", "linalg", "csgraph",
    # CuPy 14 only
    "block_array", "block_diag", "coo_array", "csc_array", "csr_array", "dia_array",
    "diags_array", "eye_array", "get_index_dtype", "matrix_transpose", "permute_dims",
    "random_array", "safely_cast_index_arrays", "sparray", "swapaxes"))


def issparse(x):
    """Whether ``x`` is a stand-in sparse matrix (a host SciPy matrix is not)."""
    return isinstance(x, spmatrix)


isspmatrix = issparse


def isspmatrix_csr(x):
    return isinstance(x, csr_matrix)


def isspmatrix_csc(x):
    return isinstance(x, csc_matrix)


def __getattr__(name):
    if name in _NOT_IMPLEMENTED:
        raise NotImplementedError(
            f"the CuPy stand-in does not implement cupyx.scipy.sparse.{name}")
    raise AttributeError(f"module 'cupyx.scipy.sparse' has no attribute '{name}'")

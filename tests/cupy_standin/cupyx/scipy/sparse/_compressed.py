"""CSR and CSC matrices of the stand-in: three stand-in cupy arrays (``data``, ``indices``,
``indptr``) computed on by SciPy, with CuPy's transfers, allocations and synchronisations
counted (``cupy.standin.stats()``).

What real cupyx does, and the stand-in counts:

- ``csr_matrix(scipy_matrix)``: three host-to-device copies (data, indices, indptr);
  ``.get()``: three device-to-host copies back to a SciPy matrix.
- Cutting rows (``X[rows]``, ``X[start:stop]``) makes three new device arrays and
  synchronises: CuPy reads back the cut's offsets, one device-to-host transfer for an index
  array (``int(Bp[-1])``), two for a slice (``int(Ap[start])``, ``int(Ap[stop])``).
  A host index array is copied to the device first (one host-to-device transfer).
- ``X @ dense``: cuSPARSE's SpMM into a new **F-ordered** dense array of the promoted
  dtype (one kernel launch, one allocation), after an F-ordered copy of a dense operand that
  is not F-contiguous (one more of each). The first product of a matrix whose canonical
  format is unknown checks it: one kernel and one device-to-host transfer (CuPy's
  ``has_canonical_format``), cached on the matrix; duplicates are summed then.
- ``.T`` shares the three arrays; ``tocsc``/``tocsr`` of the other format, ``copy``,
  ``astype`` and ``toarray`` make new arrays (one launch).

Refused as CuPy refuses: a host NumPy operand of ``@`` (TypeError), a dtype other than
bool, float32, float64, complex64, complex128 (ValueError), a shape mismatch (ValueError).
"""
import numpy
import scipy.sparse as _scipy

from cupy import _stats
from cupy._array import fresh, launched, ndarray
from cupy._creation import array as _to_device
from cupy._dispatch import unsupported
from cupy._surface import SURFACE

_MAJOR_VERSIONS = tuple(int(version.split(".")[0]) for version in SURFACE.versions)
# CuPy 13 stores int32 indices and forgets the canonical-format flag on every new matrix;
# CuPy 14 keeps SciPy's index dtype and carries the flag through cuts and casts. With both
# enforced, the stricter (CuPy 13) behaviour applies.
_CUPY13 = 13 in _MAJOR_VERSIONS
_DATA_DTYPES = "?fdFD"
_FORMAT_NAMES = {"csr": "Compressed Sparse Row", "csc": "Compressed Sparse Column"}
_UNSET = object()


def _device_copy(host, dtype=None):
    """A new device array holding a copy of the NumPy array ``host`` (a result computed on
    the device: an allocation, no transfer)."""
    return fresh(numpy.array(host, dtype=dtype, copy=True))


def _index_dtype(source_dtype):
    """The index dtype of a new matrix built from indices of ``source_dtype``."""
    return numpy.dtype(numpy.int32) if _CUPY13 else numpy.dtype(source_dtype)


def _carried(flag):
    """The canonical-format flag a derived matrix keeps (None: unknown)."""
    return None if _CUPY13 else flag


def _is_shape(value):
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(n, (int, numpy.integer)) and not isinstance(n, bool)
                    for n in value))


def _sync():
    """One synchronising read of a device value (counted as a device-to-host transfer)."""
    _stats.add("device_to_host")


class spmatrix:
    """Base class of the stand-in's sparse matrices (as ``cupyx.scipy.sparse.spmatrix``)."""

    __array_priority__ = 101
    format = None
    ndim = 2

    def __init__(self, *args, **kwargs):
        if type(self) is spmatrix and (args or kwargs):
            raise TypeError("cannot instantiate spmatrix directly; use a format subclass "
                            "such as csr_matrix")

    def __len__(self):
        raise TypeError("sparse matrix length is ambiguous; use getnnz() or shape[0]")

    def _sd_refuse(self, operation):
        raise NotImplementedError(f"the CuPy stand-in does not implement "
                                  f"cupyx.scipy.sparse.{type(self).__name__}.{operation}")


def _refusing(name):
    def method(self, *args, **kwargs):
        self._sd_refuse(name)
    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__pow__", "__neg__", "__abs__", "__iter__",
              "sum", "mean", "max", "min", "multiply", "power", "reshape", "tocoo",
              "todia", "todense", "eliminate_zeros", "sort_indices", "getrow", "getcol"):
    setattr(spmatrix, _name, _refusing(_name))


class _compressed_sparse_matrix(spmatrix):
    """CSR or CSC: ``data`` (nnz,), ``indices`` (nnz,), ``indptr`` (major + 1,), all stand-in
    cupy arrays; ``shape`` (rows, columns)."""

    _major_axis = None  # 0: rows (CSR), 1: columns (CSC)

    def __init__(self, arg1, shape=None, dtype=None, copy=False):
        """As cupyx's: ``arg1`` a SciPy sparse matrix or array (copied to the device), a
        stand-in sparse matrix, a shape ``(M, N)`` (empty), or ``(data, indices, indptr)``
        (stand-in cupy arrays)."""
        if shape is not None and not _is_shape(shape):
            raise ValueError("invalid shape (must be a 2-tuple of int)")
        data, indices, indptr, shape, copy = self._sd_parts(arg1, shape, copy)
        dtype = data.dtype if dtype is None else numpy.dtype(dtype)
        if dtype.char not in _DATA_DTYPES:
            raise ValueError("Only bool, float32, float64, complex64 and complex128 are "
                             "supported")
        index_dtype = _index_dtype(indices.dtype)
        self.data = data.astype(dtype, copy=copy)
        self.indices = indices.astype(index_dtype, copy=copy)
        self.indptr = indptr.astype(index_dtype, copy=copy)
        if shape is None:  # CuPy reads the largest index back
            _sync()
            shape = self._swap(indptr.size - 1, int(indices._sd_a.max(initial=-1)) + 1)
        self._shape = (int(shape[0]), int(shape[1]))
        major = self._swap(*self._shape)[0]
        if self.indptr.size != major + 1:
            raise ValueError(f"index pointer size ({self.indptr.size}) should be "
                             f"({major + 1})")
        self._sd_canonical = None

    def _sd_parts(self, arg1, shape, copy):
        """(data, indices, indptr, shape, copy) of the constructor's ``arg1``."""
        if isinstance(arg1, spmatrix):
            x = arg1.asformat(self.format)
            copy = copy and arg1.format == self.format
            return x.data, x.indices, x.indptr, shape or arg1.shape, copy
        if _is_shape(arg1):
            return (*self._sd_empty_parts(arg1, numpy.float64, numpy.int32), arg1, False)
        if _scipy.issparse(arg1):
            if arg1.ndim != 2:
                raise NotImplementedError("the CuPy stand-in builds 2-D sparse matrices only")
            x = arg1.asformat(self.format)
            index_dtype = _index_dtype(x.indices.dtype)
            return (_to_device(x.data), _to_device(x.indices, dtype=index_dtype),
                    _to_device(x.indptr, dtype=index_dtype), shape or arg1.shape, False)
        if isinstance(arg1, tuple) and len(arg1) == 3:
            data, indices, indptr = arg1
            if not all(type(a) is ndarray and a.ndim == 1 for a in arg1):
                raise ValueError("data, indices, and indptr should be 1-D cupy arrays")
            if data.size != indices.size:
                raise ValueError("indices and data should have the same size")
            return data, indices, indptr, shape, copy
        if type(arg1) is ndarray:
            raise NotImplementedError("the CuPy stand-in does not build a sparse matrix from "
                                      "a dense cupy array")
        raise ValueError("Unsupported initializer format")

    def _sd_empty_parts(self, shape, dtype, index_dtype):
        launched()
        major = self._swap(*shape)[0]
        return (fresh(numpy.zeros(0, dtype)), fresh(numpy.zeros(0, index_dtype)),
                fresh(numpy.zeros(major + 1, index_dtype)))

    @classmethod
    def _sd_from_arrays(cls, data, indices, indptr, shape, canonical):
        """A matrix over the given stand-in arrays (shared, not copied)."""
        matrix = object.__new__(cls)
        matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
        matrix._shape = (int(shape[0]), int(shape[1]))
        matrix._sd_canonical = canonical
        return matrix

    @classmethod
    def _sd_from_host(cls, host, index_dtype, canonical=None):
        """A matrix of new device arrays holding a SciPy result computed "on the device"
        (allocations and one kernel launch, no transfer)."""
        launched()
        host = host.asformat(cls.format)
        return cls._sd_from_arrays(_device_copy(host.data), _device_copy(host.indices,
                                                                         index_dtype),
                                   _device_copy(host.indptr, index_dtype), host.shape,
                                   canonical)

    def _sd_host(self):
        """A SciPy matrix over the NumPy data of the three arrays (no transfer: the
        stand-in's way of computing "on the device")."""
        make = _scipy.csr_matrix if self.format == "csr" else _scipy.csc_matrix
        return make((self.data._sd_a, self.indices._sd_a, self.indptr._sd_a),
                    shape=self._shape, copy=False)

    # -- attributes ---------------------------------------------------------------------
    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        return self.data.size

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return (f"<{_FORMAT_NAMES[self.format]} sparse matrix of dtype '{self.dtype}'\n"
                f"\twith {self.nnz} stored elements and shape {self._shape}>")

    def _swap(self, x, y):
        return (x, y) if self._major_axis == 0 else (y, x)

    # -- canonical format ---------------------------------------------------------------
    @property
    def has_canonical_format(self):
        """Whether indices are sorted and unique in each row (CSR) or column (CSC); the
        first look costs a kernel and a device-to-host transfer, as in CuPy."""
        if self._sd_canonical is None:
            if self.nnz == 0:
                self._sd_canonical = True
            else:
                launched()
                _sync()
                self._sd_canonical = bool(self._sd_host().has_canonical_format)
        return self._sd_canonical

    @has_canonical_format.setter
    def has_canonical_format(self, value):
        self._sd_canonical = bool(value)

    def sum_duplicates(self):
        """Sum duplicate entries in place (new arrays, as CuPy rebuilds the matrix)."""
        if self.has_canonical_format:
            return
        host = self._sd_host().copy()
        host.sum_duplicates()
        summed = self._sd_from_host(host, self.indices.dtype)
        self.data, self.indices, self.indptr = summed.data, summed.indices, summed.indptr
        self._sd_canonical = True

    # -- conversions --------------------------------------------------------------------
    def get(self, stream=None):
        """The matrix on the host as SciPy's of the same format: three device-to-host
        copies."""
        make = _scipy.csr_matrix if self.format == "csr" else _scipy.csc_matrix
        return make((self.data.get(stream), self.indices.get(stream),
                     self.indptr.get(stream)), shape=self._shape)

    def asformat(self, format):
        if format is None or format == self.format:
            return self
        if format not in ("csr", "csc"):
            self._sd_refuse(f"asformat({format!r})")
        return getattr(self, "to" + format)()

    def copy(self):
        return type(self)(self, copy=True)

    def astype(self, dtype, /, copy=_UNSET):
        """The matrix with data cast to ``dtype`` (indices copied unless copy=False and
        the dtype already matches). CuPy 13's ``astype(t)`` has no ``copy``."""
        if copy is not _UNSET and _CUPY13:
            raise TypeError("astype() got an unexpected keyword argument 'copy' (recorded "
                            "CuPy 13.6.0 refuses it)")
        copy = True if copy is _UNSET else copy
        dtype = numpy.dtype(dtype)
        if dtype.char not in _DATA_DTYPES:
            raise ValueError("Only bool, float32, float64, complex64 and complex128 are "
                             "supported")
        if dtype == self.dtype and not copy:
            return self
        return self._sd_from_arrays(self.data.astype(dtype), self.indices.copy(),
                                    self.indptr.copy(), self._shape,
                                    _carried(self._sd_canonical))

    def toarray(self, order=None, out=None):
        """The dense (M, N) cupy array: a new device array of the full size."""
        if out is not None:
            self._sd_refuse("toarray(out=...)")
        launched()
        return fresh(self._sd_host().toarray(order=order or "C"))

    def transpose(self, axes=None, copy=False):
        """The transpose in the other format over the same three arrays."""
        if axes is not None:
            raise ValueError("Sparse matrices do not support an 'axes' parameter because "
                             "swapping dimensions is the only logical permutation.")
        if _CUPY13:  # CuPy 13 reads the flag to hand it over (a sync when unknown)
            self.has_canonical_format  # noqa: B018
        other = csc_matrix if self.format == "csr" else csr_matrix
        arrays = (self.data, self.indices, self.indptr)
        if copy:
            arrays = tuple(a.copy() for a in arrays)
        return other._sd_from_arrays(*arrays, self._shape[::-1], self._sd_canonical)

    @property
    def T(self):
        return self.transpose()

    # -- products -----------------------------------------------------------------------
    def __matmul__(self, other):
        if type(other) is ndarray:
            if other.ndim == 0:
                raise ValueError("Scalar operands are not allowed, use '*' instead")
            return self._sd_product(other)
        if isinstance(other, numpy.ndarray):
            raise unsupported(other)  # CuPy: NotImplemented, then NumPy's matmul fails
        if numpy.isscalar(other):
            raise ValueError("Scalar operands are not allowed, use '*' instead")
        if isinstance(other, spmatrix):
            self._sd_refuse("__matmul__ of two sparse matrices")
        return NotImplemented

    def __rmatmul__(self, other):
        if type(other) is ndarray and other.ndim == 2:
            return (self.T @ other.T).T
        if isinstance(other, numpy.ndarray):
            raise unsupported(other)
        if type(other) is ndarray or numpy.isscalar(other):
            self._sd_refuse("__rmatmul__ of a scalar or a 1-D array")
        return NotImplemented

    def dot(self, other):
        if numpy.isscalar(other):
            return self * other
        return self @ other

    def _sd_product(self, other):
        """self @ other for a dense stand-in array ``other`` (k,) or (k, n): a new dense
        array, (m,) or F-ordered (m, n), of the promoted dtype."""
        if other.ndim > 2:
            raise ValueError("could not interpret dimensions")
        if other.shape[0] != self._shape[1]:
            raise ValueError("dimension mismatch")
        self.sum_duplicates()
        operand = other._sd_a
        if operand.ndim == 2 and not operand.flags.f_contiguous:
            launched()  # cupy.asfortranarray(other): cuSPARSE takes F-ordered operands
            operand = fresh(numpy.asfortranarray(operand))._sd_a
        result = numpy.asarray(self._sd_host() @ operand)
        launched()
        return fresh(numpy.asfortranarray(result) if result.ndim == 2 else result.copy())


class csr_matrix(_compressed_sparse_matrix):
    """Compressed Sparse Row matrix (rows cut cheaply: ``X[rows]``, ``X[start:stop]``)."""

    format = "csr"
    _major_axis = 0

    def tocsr(self, copy=False):
        return self.copy() if copy else self

    def tocsc(self, copy=False):
        """A CSC matrix of new arrays (cuSPARSE csr2csc)."""
        return csc_matrix._sd_from_host(self._sd_host().tocsc(), self.indices.dtype)

    def __getitem__(self, key):
        """Rows only: ``X[i]``, ``X[start:stop:step]``, ``X[rows]`` (a 1-D integer array;
        negative and out-of-range values wrap, as in CuPy), each optionally followed by
        ``, :``. A (rows, n_columns) CSR matrix of new arrays."""
        rows = _row_key(key, self._shape[0])
        if type(rows) is slice:
            return self._sd_slice(rows)
        return self._sd_take(rows)

    def _sd_slice(self, rows):
        start, stop, step = rows.indices(self._shape[0])
        if step != 1:
            launched()  # cupy.arange on the device
            return self._sd_take(fresh(numpy.arange(start, stop, step,
                                                    dtype=self.indptr.dtype)))
        count = len(range(start, stop))
        if count == 0 or self.nnz == 0:
            return self._sd_empty((count, self._shape[1]))
        if (start, stop) != (0, self._shape[0]):
            _sync()  # int(Ap[start]), int(Ap[stop]): the cut's offsets
            _sync()
        # a copy (CuPy: X[a:b] is X[a:b, :], whose full column slice copies): flag unknown
        return self._sd_from_host(self._sd_host()[start:stop], self.indices.dtype)

    def _sd_take(self, rows):
        """The rows ``rows`` (a 1-D stand-in integer array) as a new CSR matrix."""
        if rows.size == 0 or self.nnz == 0:
            return self._sd_empty((rows.size, self._shape[1]))
        _sync()  # int(Bp[-1]): the cut's number of stored values
        picked = rows._sd_a.astype(self.indices.dtype, copy=False) % self._shape[0]
        return self._sd_from_host(self._sd_host()[picked], self.indices.dtype,
                                  _carried(self._sd_canonical))

    def _sd_empty(self, shape):
        return self._sd_from_arrays(*self._sd_empty_parts(shape, self.dtype,
                                                          self.indices.dtype), shape, None)


class csc_matrix(_compressed_sparse_matrix):
    """Compressed Sparse Column matrix (``X.T`` of a CSR matrix; products and conversions
    only)."""

    format = "csc"
    _major_axis = 1

    def tocsc(self, copy=False):
        return self.copy() if copy else self

    def tocsr(self, copy=False):
        """A CSR matrix of new arrays (cuSPARSE csc2csr)."""
        return csr_matrix._sd_from_host(self._sd_host().tocsr(), self.indices.dtype)

    def __getitem__(self, key):
        self._sd_refuse("__getitem__ (index .tocsr() instead)")


def _row_key(key, n_rows):
    """The rows that ``key`` selects: a slice or a 1-D stand-in integer array. A trailing
    full column slice is allowed; anything else that CuPy takes is NotImplementedError."""
    if type(key) is tuple:
        if len(key) == 2 and key[1] == slice(None):
            key = key[0]
        elif len(key) == 1:
            key = key[0]
        else:
            raise NotImplementedError("the CuPy stand-in indexes sparse matrices by rows "
                                      f"only (X[rows] or X[rows, :]), not by {key!r}")
    if type(key) is ndarray and key.ndim == 0:
        key = key.item()  # CuPy: row.item() (a sync, counted by item)
    if isinstance(key, (int, numpy.integer)) and not isinstance(key, (bool, numpy.bool_)):
        index = int(key)
        if not -n_rows <= index < n_rows:
            raise IndexError(f"row ({index}) out of range")
        index %= n_rows
        return slice(index, index + 1)
    if type(key) is slice:
        return key
    if isinstance(key, (list, numpy.ndarray)):
        key = _to_device(key)  # CuPy: cupy.asarray(idx): one host-to-device copy
    if type(key) is not ndarray:
        raise IndexError("invalid index")
    if key.dtype.kind not in "iu" or key.ndim != 1:
        raise NotImplementedError(f"the CuPy stand-in indexes sparse rows with 1-D integer "
                                  f"arrays only, not with a {key.ndim}-D {key.dtype} array")
    return key


for _cls, _module in ((spmatrix, "_base"), (csr_matrix, "_csr"), (csc_matrix, "_csc")):
    _cls.__module__ = f"cupyx.scipy.sparse.{_module}"

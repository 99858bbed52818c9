"""Sparse X on the cupy backend, and the cupyx.scipy.sparse stand-in that runs it in CI.

Two kinds of tests:
- The stand-in's ``cupyx.scipy.sparse`` against its promises (tests/cupy_standin/README.md):
  CSR/CSC matrices built from SciPy's with the transfers counted, rows cut with device
  index arrays, products with dense device arrays, CuPy's refusals. These need the stand-in
  (skipped where a real CuPy holds the name ``cupy``).
- ``gpu``-marked ones: nnback's cupy backend fed a scipy.sparse X fits like the numpy
  backend (and scikit-learn), on real CuPy where a GPU works and on the stand-in elsewhere;
  that nothing densifies X is read from the stand-in's allocation counts (stand-in only).
"""
import importlib
import tracemalloc
import warnings

import numpy as np
import pytest

sparse = pytest.importorskip("scipy.sparse")

import nnback as nb  # noqa: E402

from test_cupy_standin import STANDIN_PATH, standin as load_standin  # noqa: E402

RNG = np.random.default_rng(21)


def host_matrix(n_rows=12, n_columns=7, density=0.3, seed=0, dtype="float64"):
    """A SciPy CSR matrix (n_rows, n_columns) with about ``density`` of its cells set."""
    return sparse.random(n_rows, n_columns, density=density, format="csr", random_state=seed,
                         dtype=dtype)


def labelled_data(n_samples=240, n_features=60, density=0.05, seed=0, n_classes=3):
    """(X: CSR (n_samples, n_features), y: class labels that depend on X's first columns)."""
    X = host_matrix(n_samples, n_features, density, seed)
    score = np.asarray(X[:, :15].sum(axis=1)).ravel()
    edges = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    return X, np.searchsorted(edges, score)


# -- the stand-in's cupyx.scipy.sparse ------------------------------------------------------
@pytest.fixture
def cp():
    """The stand-in module (test_cupy_standin's loader: a skip when real CuPy holds the
    name)."""
    return load_standin()


@pytest.fixture
def sp(cp):
    """The stand-in's cupyx.scipy.sparse."""
    module = importlib.import_module("cupyx.scipy.sparse")
    assert module.__file__.startswith(str(STANDIN_PATH)), module.__file__
    return module


def to_host(matrix):
    return matrix.get().toarray()


def test_csr_from_scipy_is_three_host_to_device_copies(cp, sp):
    X = host_matrix()
    with cp.standin.counting() as counts:
        x = sp.csr_matrix(X)
    assert counts.host_to_device == 3 and counts.device_to_host == 0
    assert counts.allocations == 3
    assert counts.allocated_bytes == X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    assert x.shape == (12, 7) and x.dtype == np.float64 and x.nnz == X.nnz
    assert x.format == "csr" and x.ndim == 2
    for name in ("data", "indices", "indptr"):
        assert type(getattr(x, name)) is cp.ndarray, name
        np.testing.assert_array_equal(getattr(x, name).get(), getattr(X, name))
    assert sp.issparse(x) and sp.isspmatrix(x) and sp.isspmatrix_csr(x)
    assert not sp.isspmatrix_csc(x)
    assert not sp.issparse(X) and not sp.issparse(cp.asarray(X.toarray()))


def test_get_is_three_device_to_host_copies_to_scipy(cp, sp):
    X = host_matrix()
    x = sp.csr_matrix(X)
    with cp.standin.counting() as counts:
        back = x.get()
    assert counts.device_to_host == 3 and counts.host_to_device == 0
    assert type(back) is sparse.csr_matrix
    np.testing.assert_array_equal(back.toarray(), X.toarray())
    assert type(sp.csc_matrix(X).get()) is sparse.csc_matrix


def test_construction_from_scipy_formats_and_stand_in_matrices(cp, sp):
    X = host_matrix()
    np.testing.assert_array_equal(to_host(sp.csc_matrix(X)), X.toarray())
    np.testing.assert_array_equal(to_host(sp.csr_matrix(sparse.csr_array(X))), X.toarray())
    x = sp.csr_matrix(X)
    with cp.standin.counting() as counts:
        same = sp.csr_matrix(x)
        copied = sp.csr_matrix(x, copy=True)
        converted = sp.csr_matrix(sp.csc_matrix(x))
    assert counts.host_to_device == 0 and counts.device_to_host == 0
    assert same.data is x.data and copied.data is not x.data
    for matrix in (same, copied, converted):
        np.testing.assert_array_equal(to_host(matrix), X.toarray())
    empty = sp.csr_matrix((3, 4))
    assert empty.shape == (3, 4) and empty.nnz == 0 and empty.dtype == np.float64


def test_cupys_refusals_at_construction(cp, sp):
    X = host_matrix()
    with pytest.raises(ValueError, match="Only bool, float32, float64, complex64 and "
                                         "complex128 are supported"):
        sp.csr_matrix(X.astype(np.int64))
    assert sp.csr_matrix(X.astype(np.int64), dtype="float32").dtype == np.float32
    with pytest.raises(ValueError, match="Unsupported initializer format"):
        sp.csr_matrix(X.toarray())
    with pytest.raises(ValueError, match="1-D cupy arrays"):
        sp.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)


def test_rows_cut_by_a_device_index_array(cp, sp):
    X = host_matrix()
    x = sp.csr_matrix(X)
    rows = cp.asarray([5, 0, 11, 5, -1])
    with cp.standin.counting() as counts:
        cut = x[rows]
    # CuPy reads the cut's number of stored values back (one sync), copies nothing in
    assert counts.device_to_host == 1 and counts.host_to_device == 0
    assert sp.isspmatrix_csr(cut) and cut.shape == (5, 7)
    np.testing.assert_array_equal(to_host(cut), X[[5, 0, 11, 5, 11]].toarray())
    np.testing.assert_array_equal(to_host(x[rows, :]), X[[5, 0, 11, 5, 11]].toarray())
    assert x[cp.asarray([], dtype=cp.int64)].shape == (0, 7)


def test_a_host_index_array_is_copied_to_the_device_as_cupy_does(cp, sp):
    """cupyx's _asindices runs cupy.asarray(idx): a host index array is one host-to-device
    copy per cut (never free, unlike a device index array)."""
    X = host_matrix()
    x = sp.csr_matrix(X)
    with cp.standin.counting() as counts:
        cut = x[np.array([1, 2])]
    assert counts.host_to_device == 1
    np.testing.assert_array_equal(to_host(cut), X[[1, 2]].toarray())


def test_rows_cut_by_a_slice(cp, sp):
    X = host_matrix()
    x = sp.csr_matrix(X)
    with cp.standin.counting() as counts:
        cut = x[3:9]
    assert counts.device_to_host == 2 and counts.host_to_device == 0  # the cut's offsets
    np.testing.assert_array_equal(to_host(cut), X[3:9].toarray())
    np.testing.assert_array_equal(to_host(x[3:9, :]), X[3:9].toarray())
    np.testing.assert_array_equal(to_host(x[1:12:3]), X[1:12:3].toarray())
    np.testing.assert_array_equal(to_host(x[4]), X[4].toarray())
    assert x[5:5].shape == (0, 7)
    with pytest.raises(IndexError, match=r"row \(12\) out of range"):
        x[12]


def test_indexing_it_does_not_implement_is_refused_by_name(cp, sp):
    x = sp.csr_matrix(host_matrix())
    with pytest.raises(NotImplementedError, match="rows only"):
        x[:, 2]
    with pytest.raises(NotImplementedError, match="1-D integer arrays only"):
        x[cp.asarray([True] * 12)]
    with pytest.raises(NotImplementedError, match="index .tocsr"):
        x.T[0]


def test_product_with_a_dense_device_array(cp, sp):
    X = host_matrix()
    W = RNG.normal(size=(7, 3))
    x, w = sp.csr_matrix(X), cp.asarray(W)
    with cp.standin.counting() as counts:
        y = x @ w
    assert type(y) is cp.ndarray and y.shape == (12, 3) and y.dtype == np.float64
    assert y.flags.f_contiguous and not y.flags.c_contiguous  # cuSPARSE writes F order
    assert counts.kernel_launches >= 1 and counts.host_to_device == 0
    np.testing.assert_allclose(y.get(), X @ W, rtol=1e-14)
    np.testing.assert_allclose(x.dot(w).get(), X @ W, rtol=1e-14)
    np.testing.assert_allclose((x @ w[:, 0]).get(), X @ W[:, 0], rtol=1e-14)
    mixed = x @ cp.asarray(W, dtype=cp.float32)
    assert mixed.dtype == np.float64  # the promoted dtype


def test_the_canonical_format_check_syncs_once_per_matrix(cp, sp):
    x = sp.csr_matrix(host_matrix())
    w = cp.asarray(RNG.normal(size=(2, 7))).T  # an F-ordered (7, 2) view
    with cp.standin.counting() as first:
        x @ w
    with cp.standin.counting() as second:
        x @ w
    assert first.device_to_host == 1 and second.device_to_host == 0
    assert second.allocations == 1  # the result only: w is F-ordered already


def test_duplicates_are_summed_before_the_product(cp, sp):
    X = sparse.csr_matrix((np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0]),
                           np.array([0, 2, 3])), shape=(2, 3))
    x = sp.csr_matrix(X)
    assert not x.has_canonical_format
    w = cp.asarray(np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal((x @ w).get(), [[6.0, 9.0], [0.0, 4.0]])
    assert x.has_canonical_format and x.nnz == 2


def test_host_operands_are_refused(cp, sp):
    x = sp.csr_matrix(host_matrix())
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        x @ np.ones((7, 2))
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.ones((2, 12)) @ x
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        x.dot(np.ones((7, 2)))
    with pytest.raises(ValueError, match="dimension mismatch"):
        x @ cp.ones((6, 2))
    with pytest.raises(ValueError, match="Scalar operands are not allowed"):
        x @ 2.0


def test_transpose_shares_the_arrays_and_multiplies(cp, sp):
    X = host_matrix()
    G = RNG.normal(size=(12, 4))
    x, g = sp.csr_matrix(X), cp.asarray(G)
    assert x.has_canonical_format  # known now (CuPy 13's transpose would read it)
    with cp.standin.counting() as counts:
        t = x.T
    assert counts.allocations == 0 and counts.kernel_launches == 0
    assert sp.isspmatrix_csc(t) and t.shape == (7, 12)
    assert t.data is x.data and t.indices is x.indices and t.indptr is x.indptr
    product = t @ g
    assert product.shape == (7, 4) and product.flags.f_contiguous
    np.testing.assert_allclose(product.get(), X.T @ G, rtol=1e-14)
    np.testing.assert_allclose((cp.asarray(G.T) @ x).get(), G.T @ X, rtol=1e-14)
    np.testing.assert_array_equal(to_host(t.tocsr()), X.T.toarray())
    np.testing.assert_array_equal(to_host(x.tocsc()), X.toarray())


def test_conversions_and_casts(cp, sp):
    X = host_matrix()
    x = sp.csr_matrix(X)
    assert x.tocsr() is x and x.asformat("csr") is x
    single = x.astype("float32")
    assert single.dtype == np.float32 and single.indices is not x.indices
    np.testing.assert_allclose(to_host(single), X.toarray().astype(np.float32))
    with pytest.raises(ValueError, match="Only bool, float32"):
        x.astype("int32")
    with cp.standin.counting() as counts:
        dense = x.toarray()
    assert counts.allocated_bytes >= 12 * 7 * 8  # densifying is a full-size allocation
    np.testing.assert_array_equal(dense.get(), X.toarray())
    if "13.6.0" in cp.__standin_surface__:
        with pytest.raises(TypeError, match="copy"):
            x.astype("float32", copy=False)  # CuPy 13's astype(t) has no copy


def test_what_the_stand_in_lacks_raises_not_implemented(cp, sp):
    import cupyx

    for module, name in ((sp, "coo_matrix"), (sp, "csr_array"), (sp, "vstack"),
                         (cupyx, "profiler"), (cupyx.scipy, "ndimage")):
        with pytest.raises(NotImplementedError, match=f"does not implement .*{name}"):
            getattr(module, name)
    with pytest.raises(AttributeError):
        sp.not_a_cupyx_name  # noqa: B018
    x = sp.csr_matrix(host_matrix())
    with pytest.raises(NotImplementedError, match=r"csr_matrix\.__add__"):
        x + x
    with pytest.raises(TypeError, match="length is ambiguous"):
        len(x)


# -- nnback on the cupy backend with sparse X -----------------------------------------------
def fitted_mlp(backend, X, y, **fit):
    model = nb.MLP([X.shape[1], 8, 3], activation="relu", output="softmax",
                   backend=backend, dtype="float64", seed=0)
    history = model.fit(X, y, loss="crossentropy", optimizer=nb.SGD(lr=0.1, momentum=0.9),
                        epochs=3, batch_size=32, seed=1, **fit)
    return model, np.array(history.loss)


@pytest.mark.gpu
def test_mlp_fit_on_sparse_equals_the_numpy_backend(cupy_backend):
    X, y = labelled_data()
    expected, expected_loss = fitted_mlp("numpy", X, y)
    got, got_loss = fitted_mlp(cupy_backend, X, y)
    np.testing.assert_allclose(got_loss, expected_loss, rtol=1e-10)
    for a, b in zip(got.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.predict(X), expected.predict(X), rtol=1e-10, atol=1e-14)
    assert got.evaluate(X, y, "crossentropy") == pytest.approx(
        expected.evaluate(X, y, "crossentropy"), rel=1e-10)


@pytest.mark.gpu
def test_mlp_takes_a_device_sparse_matrix_as_it_takes_scipys(cupy_backend):
    cupyx_sparse = importlib.import_module("cupyx.scipy.sparse")
    X, y = labelled_data()
    expected, _ = fitted_mlp(cupy_backend, X, y)
    got, _ = fitted_mlp(cupy_backend, cupyx_sparse.csr_matrix(X), y)
    for a, b in zip(got.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.predict(cupyx_sparse.csr_matrix(X)), expected.predict(X),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.gpu
@pytest.mark.parametrize("early_stopping", [False, True], ids=["plain", "early_stopping"])
def test_mlp_classifier_on_sparse_matches_numpy_and_sklearn(cupy_backend, early_stopping):
    pytest.importorskip("sklearn")
    from sklearn import neural_network

    from nnback import MLPClassifier

    X, y = labelled_data()
    params = dict(hidden_layer_sizes=(8,), max_iter=8, random_state=0, solver="sgd",
                  learning_rate_init=0.1, batch_size=40, early_stopping=early_stopping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=8
        on_cupy = MLPClassifier(backend="cupy", **params).fit(X, y)
        on_numpy = MLPClassifier(backend="numpy", **params).fit(X, y)
        theirs = neural_network.MLPClassifier(**params).fit(X, y)
    assert on_cupy.n_iter_ == on_numpy.n_iter_ == theirs.n_iter_
    fitted = on_cupy.coefs_ + on_cupy.intercepts_
    for reference in (on_numpy, theirs):
        for a, b in zip(fitted, reference.coefs_ + reference.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(on_cupy.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    if early_stopping:
        np.testing.assert_allclose(on_cupy.validation_scores_, theirs.validation_scores_)
    proba = on_cupy.predict_proba(X)
    np.testing.assert_allclose(proba, on_numpy.predict_proba(X), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(proba, theirs.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(on_cupy.predict(X), theirs.predict(X))
    assert on_cupy.score(X, y) == theirs.score(X, y)


@pytest.mark.gpu
def test_mlp_classifier_takes_a_device_sparse_matrix(cupy_backend):
    """A cupyx X stays on the device: checked there (its stored values), trained and
    predicted on as the same matrix from the host."""
    pytest.importorskip("sklearn")
    from nnback import MLPClassifier

    cupyx_sparse = importlib.import_module("cupyx.scipy.sparse")
    X, y = labelled_data()
    params = dict(hidden_layer_sizes=(8,), max_iter=4, random_state=0, solver="sgd",
                  learning_rate_init=0.1, batch_size=40, backend="cupy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_host = MLPClassifier(**params).fit(X, y)
        on_device = MLPClassifier(**params).fit(cupyx_sparse.csr_matrix(X), y)
    for a, b in zip(on_device.coefs_, from_host.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(on_device.predict(cupyx_sparse.csr_matrix(X)),
                                  from_host.predict(X))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        MLPClassifier(**params).fit(cupyx_sparse.csr_matrix(bad), y)
    with pytest.raises(ValueError, match="X has 59 features, but MLPClassifier is expecting "
                                         "60"):
        on_device.predict(cupyx_sparse.csr_matrix(X[:, :59]))


@pytest.mark.gpu
def test_a_wide_sparse_x_is_never_densified(cupy_backend, standin):
    """3,000 × 20,000 at 0.1 % density: dense, X would be a 480 MB device array. Over a
    fit and a prediction the device allocates a fraction of that in all (so no single
    allocation comes near it), and the host's traced peak stays small too."""
    n_samples, n_features = 3_000, 20_000
    X = host_matrix(n_samples, n_features, density=0.001, seed=3)
    y = RNG.integers(0, 2, size=n_samples)
    dense_bytes = n_samples * n_features * 8
    model = nb.MLP([n_features, 8, 1], output="sigmoid", backend=cupy_backend,
                   dtype="float64", seed=0)
    tracemalloc.start()
    try:
        with standin.counting() as counts:
            model.fit(X, y, loss="bce", optimizer="adam", lr=0.01, epochs=2, batch_size=200,
                      seed=1)
            predictions = model.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert predictions.shape == (n_samples, 1)
    assert counts.allocated_bytes < dense_bytes / 2, counts
    assert peak < dense_bytes / 8, peak
    # the input crossed once, as its three arrays, not as a dense matrix
    assert counts.host_to_device < 100, counts

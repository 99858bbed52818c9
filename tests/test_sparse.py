"""Sparse X (scipy.sparse CSR/CSC, matrices and arrays) on the numpy backend: the first
layer multiplies it as it is, so a wide TF-IDF-like matrix trains in the memory of its
non-zeros plus the batch; the estimators match scikit-learn's MLPs on it."""
import tracemalloc
import warnings

import numpy as np
import pytest

sparse = pytest.importorskip("scipy.sparse")

import nnback as nb  # noqa: E402

RNG = np.random.default_rng(4)


def sparse_data(n_samples=300, n_features=400, density=0.02, seed=0):
    """(X: CSR (n_samples, n_features) with about ``density`` of its cells set, y: 0/1)."""
    rng = np.random.default_rng(seed)
    nnz = int(n_samples * n_features * density)
    X = sparse.csr_matrix((rng.uniform(size=nnz), (rng.integers(0, n_samples, nnz),
                                                   rng.integers(0, n_features, nnz))),
                          shape=(n_samples, n_features))
    score = np.asarray(X[:, :40].sum(axis=1)).ravel()
    return X, (score > np.median(score)).astype(int)


@pytest.mark.parametrize("convert", [lambda X: X, sparse.csc_matrix, sparse.csr_array],
                         ids=["csr_matrix", "csc_matrix", "csr_array"])
def test_model_fit_on_sparse_equals_fit_on_dense(convert):
    X, y = sparse_data()
    dense = nb.MLP([400, 8, 1], dtype="float64", seed=0)
    on_sparse = nb.MLP([400, 8, 1], dtype="float64", seed=0)
    kwargs = dict(loss="bce", optimizer="adam", lr=0.01, epochs=3, batch_size=64, seed=1)
    dense.fit(X.toarray(), y, **kwargs)
    on_sparse.fit(convert(X), y, **kwargs)
    for a, b in zip(on_sparse.get_weights(), dense.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(on_sparse.predict(convert(X)), dense.predict(X.toarray()),
                               rtol=1e-10)
    assert on_sparse.evaluate(convert(X), y, "bce") == pytest.approx(
        dense.evaluate(X.toarray(), y, "bce"), rel=1e-10)


def test_sparse_input_errors_name_the_problem():
    X, y = sparse_data()
    model = nb.MLP([400, 4, 1], seed=0)
    with pytest.raises(nb.ShapeError, match=r"expects 400 features, got sparse X with shape "
                                            r"\(300, 399\)"):
        model.predict(X[:, :399])
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity among its stored"):
        model.fit(bad, y, epochs=1)


def test_a_wide_sparse_matrix_is_never_densified():
    """40,000 features at 0.1 % density: dense, X would take 1.6 GB; the fit's peak traced
    memory stays within the non-zeros, the model (first layer 40,000 × 16, with its
    gradient and Adam's two moments) and the batches."""
    n_samples, n_features = 5_000, 40_000
    X, y = sparse_data(n_samples, n_features, density=0.001)
    model = nb.MLP([n_features, 16, 1], dtype="float64", seed=0)
    dense_bytes = n_samples * n_features * 8
    model_bytes = 4 * n_features * 16 * 8  # W, dW, Adam's m and v
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    tracemalloc.start()
    try:
        model.fit(X, y, loss="bce", optimizer="adam", lr=0.01, epochs=1, batch_size=200)
        model.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x_bytes * 3 + model_bytes * 2 + 50_000_000, peak
    assert peak < dense_bytes / 10


@pytest.mark.parametrize("solver, early_stopping", [("sgd", False), ("adam", True),
                                                    ("lbfgs", False)])
def test_the_estimators_train_on_sparse_as_sklearn(solver, early_stopping):
    pytest.importorskip("sklearn")
    from sklearn import neural_network

    from nnback import MLPClassifier

    X, y = sparse_data()
    params = dict(hidden_layer_sizes=(8,), max_iter=6, random_state=0, solver=solver,
                  early_stopping=early_stopping, learning_rate_init=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPClassifier(backend="numpy", **params).fit(sparse.csc_matrix(X), y)
        theirs = neural_network.MLPClassifier(**params).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)

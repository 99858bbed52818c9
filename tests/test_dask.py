"""Out-of-core fits: nnback's scikit-learn estimators trained block by block with
dask_ml.wrappers.Incremental on a Dask array of several chunks, on a distributed.LocalCluster
(docs/scaling.md, "Out of core with Dask").

Needs dask[array], distributed and dask-ml (the test extra has them; pip install
'.[dask]') and nnback's estimators; skipped, saying which is missing, otherwise.
"""
import numpy
import pytest

import nnback as nb

da = pytest.importorskip("dask.array", reason="dask is not installed: pip install '.[dask]'")
distributed = pytest.importorskip("distributed",
                                  reason="distributed is not installed: pip install '.[dask]'")
wrappers = pytest.importorskip("dask_ml.wrappers",
                               reason="dask-ml is not installed: pip install '.[dask]'")
datasets = pytest.importorskip("sklearn.datasets")

EPOCHS = 10
CHUNK_ROWS = 500


def _classifier():
    try:
        return nb.MLPClassifier
    except (AttributeError, ImportError) as exc:
        pytest.skip(f"nnback.MLPClassifier is not available: {exc}")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of one worker process (the estimator travels to it pickled)."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def _data():
    X, y = datasets.make_classification(n_samples=6000, n_features=20, n_informative=8,
                                        n_classes=3, class_sep=1.5, random_state=0)
    X = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(numpy.float32)
    return X[:4000], y[:4000], X[4000:], y[4000:]


# both fits stop after EPOCHS epochs on purpose: the in-memory one warns that it could go on
@pytest.mark.filterwarnings("ignore:Stochastic Optimizer. Maximum iterations")
def test_incremental_fit_on_a_local_cluster_matches_an_in_memory_fit(client):
    MLPClassifier = _classifier()
    X_train, y_train, X_test, y_test = _data()
    settings = dict(hidden_layer_sizes=(32,), batch_size=100, learning_rate_init=0.01,
                    random_state=0, backend="numpy")
    in_memory = MLPClassifier(max_iter=EPOCHS, **settings).fit(X_train, y_train)
    expected = in_memory.score(X_test, y_test)

    X_dask = da.from_array(X_train, chunks=(CHUNK_ROWS, X_train.shape[1]))
    y_dask = da.from_array(y_train, chunks=CHUNK_ROWS)
    assert X_dask.numblocks[0] == len(X_train) // CHUNK_ROWS > 1
    incremental = wrappers.Incremental(MLPClassifier(**settings), scoring="accuracy",
                                       random_state=0)
    for _ in range(EPOCHS):  # each pass: one partial_fit (one epoch) per block, in turn
        incremental.partial_fit(X_dask, y_dask, classes=numpy.unique(y_train))
    accuracy = incremental.score(da.from_array(X_test, chunks=CHUNK_ROWS),
                                 da.from_array(y_test, chunks=CHUNK_ROWS))

    assert expected > 2 / 3, "the in-memory fit should be far above chance (1/3)"
    assert abs(accuracy - expected) <= 0.01, (accuracy, expected)

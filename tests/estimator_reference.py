"""Reference weights of nnback's estimators, recorded before the training-loop redesign
(issue 14): the same random_state must give the same weights (to 1e-12 in float64) after
any refactoring of the loop. ``python tests/estimator_reference.py`` rewrites
tests/data/estimator_reference.npz from the code as it is; do that only for an intended
change of the numbers, and say so in the commit."""
import os
import warnings

import numpy

CASES = {
    "clf-sgd-nesterov": dict(solver="sgd", momentum=0.9, learning_rate_init=0.1),
    "clf-sgd-plain": dict(solver="sgd", momentum=0.0, learning_rate_init=0.2),
    "clf-sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", momentum=0.5,
                               learning_rate_init=0.5, nesterovs_momentum=False),
    "clf-sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", momentum=0.9,
                             learning_rate_init=0.3, tol=1e-2, n_iter_no_change=2),
    "clf-adam": dict(solver="adam", learning_rate_init=0.01, alpha=0.01),
    "clf-adam-early": dict(solver="adam", early_stopping=True, learning_rate_init=0.01,
                           n_iter_no_change=3, validation_fraction=0.2),
    "clf-lbfgs": dict(solver="lbfgs", alpha=0.001),
    "clf-binary-adam": dict(solver="adam", learning_rate_init=0.02, binary=True),
    "clf-multilabel-sgd": dict(solver="sgd", learning_rate_init=0.1, multilabel=True),
    "clf-partial-fit": dict(solver="sgd", learning_rate_init=0.1, partial=True),
    "clf-warm-start": dict(solver="adam", learning_rate_init=0.01, warm_start=True),
    "reg-sgd": dict(solver="sgd", learning_rate_init=0.01, regressor=True),
    "reg-adam-multi": dict(solver="adam", learning_rate_init=0.01, regressor=True,
                           multioutput=True, batch_size=16),
    "reg-lbfgs": dict(solver="lbfgs", regressor=True),
    "reg-sgd-early": dict(solver="sgd", learning_rate_init=0.01, regressor=True,
                          early_stopping=True, n_iter_no_change=2),
}
PATH = os.path.join(os.path.dirname(__file__), "data", "estimator_reference.npz")


def data(case):
    rng = numpy.random.default_rng(7)
    X = rng.standard_normal((90, 5))
    if case.get("regressor"):
        y = X @ rng.standard_normal((5, 2 if case.get("multioutput") else 1))
        return X, (y if case.get("multioutput") else y.ravel())
    if case.get("multilabel"):
        return X, (X[:, :3] > 0).astype(int)
    if case.get("binary"):
        return X, numpy.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    return X, numpy.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])


def fit(name, backend="numpy"):
    """The fitted estimator of case ``name`` (float64, max_iter 30)."""
    from nnback import MLPClassifier, MLPRegressor

    case = dict(CASES[name])
    X, y = data(case)
    flags = ("regressor", "multioutput", "multilabel", "binary", "partial")
    params = {key: value for key, value in case.items() if key not in flags}
    params.setdefault("random_state", 3)
    estimator = (MLPRegressor if case.get("regressor") else MLPClassifier)(
        hidden_layer_sizes=(7, 4), max_iter=30, backend=backend, dtype="float64", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.get("partial"):
            for _ in range(5):
                estimator.partial_fit(X, y, classes=numpy.unique(y))
        else:
            estimator.fit(X, y)
            if case.get("warm_start"):
                estimator.fit(X[:60], y[:60])
    return estimator


def record(estimator):
    """{what: array} of a fitted estimator: weights, loss curve, iterations."""
    arrays = {f"coef{i}": coef for i, coef in enumerate(estimator.coefs_)}
    arrays.update({f"intercept{i}": b for i, b in enumerate(estimator.intercepts_)})
    arrays["loss"] = numpy.array([estimator.loss_])
    arrays["n_iter"] = numpy.array([estimator.n_iter_])
    if getattr(estimator, "loss_curve_", None) is not None:
        arrays["loss_curve"] = numpy.array(estimator.loss_curve_)
    if getattr(estimator, "validation_scores_", None) is not None:
        arrays["validation_scores"] = numpy.array(estimator.validation_scores_)
    return arrays


MODEL_CASES = {
    "model-sgd-mse": dict(loss="mse", optimizer="sgd", lr=0.5, batch_size=16),
    "model-adam-bce-l2": dict(loss="bce", optimizer="adam", lr=0.01, batch_size=32,
                              alpha=0.01),
    "model-momentum-full": dict(loss="sse", optimizer="momentum", lr=0.01),
}


def fit_model(name, backend="numpy"):
    """nb.MLP([5, 6, 3]) trained by fit for 20 epochs in float64: (model, history)."""
    import nnback as nb

    options = dict(MODEL_CASES[name])
    if options["optimizer"] == "momentum":
        options["optimizer"] = nb.SGD(lr=options.pop("lr"), momentum=0.9, nesterov=True)
    X, y = data({"multilabel": True})
    model = nb.MLP([5, 6, 3], backend=backend, dtype="float64", seed=1)
    history = model.fit(X, y, epochs=20, seed=2, validation_data=(X[:20], y[:20]), **options)
    return model, history


def main():
    saved = {}
    for name in CASES:
        for key, value in record(fit(name)).items():
            saved[f"{name}/{key}"] = value
    for name in MODEL_CASES:
        model, history = fit_model(name)
        for i, weight in enumerate(model.get_weights()):
            saved[f"{name}/weight{i}"] = weight
        saved[f"{name}/loss_curve"] = numpy.array(history.loss)
        saved[f"{name}/val_loss"] = numpy.array(history.val_loss)
    numpy.savez(PATH, **saved)
    print(f"wrote {len(saved)} arrays of {len(CASES)} cases to {PATH}")


if __name__ == "__main__":
    main()

"""The bad-input corpus: every public entry point refuses what it cannot use with a
ValueError or TypeError (or an nnback subclass) naming the argument, what was expected and
what came, and a call that fails changes nothing."""
import copy

import numpy as np
import pytest

import nnback as nb
from nnback import validation

X_XOR = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y_XOR = np.array([0.0, 1.0, 1.0, 0.0])


def xor_model(backend, **options):
    options.setdefault("seed", 0)
    return nb.MLP([2, 3, 1], backend=backend, **options)


# -- X: (argument, expected error, what the message must say) ---------------------------------
BAD_X = {
    "nan": (np.array([[0.0, np.nan]]), ValueError, r"X contains NaN or infinity.*\(0, 1\)"),
    "inf": (np.array([[np.inf, 0.0]]), ValueError, r"X contains NaN or infinity"),
    "empty": (np.zeros((0, 2)), ValueError, r"X is empty \(shape \(0, 2\)\)"),
    "no columns": (np.zeros((3, 0)), ValueError, r"X is empty"),
    "1-D of the wrong length": (np.zeros(3), nb.ShapeError,
                                r"expects 2 features, got 1-D X with shape \(3,\)"),
    "3-D": (np.zeros((2, 2, 2)), nb.ShapeError, r"X must be 2-D .*got 3-D"),
    "0-D": (np.float64(1.0), nb.ShapeError, r"X must be 2-D .*got 0-D"),
    "ragged": ([[1.0, 2.0], [3.0]], ValueError, r"X could not be read.*different lengths"),
    "a string": ("0 1", TypeError, r"X must be an array of numbers, got a string"),
    "strings": (np.array([["a", "b"]]), TypeError, r"X has dtype <U1; numbers are needed"),
    "objects": (np.array([[1.0, None]], dtype=object), TypeError,
                r"X holds NoneType 'None' at index \(0, 1\)"),
    "complex": (np.ones((1, 2), complex), TypeError, r"X has complex dtype complex128"),
    "bool": (np.ones((1, 2), bool), TypeError, r"X has dtype bool; numbers are needed"),
    "None": (None, TypeError, r"X must be an array of numbers, got None"),
    "datetimes": (np.zeros((1, 2), "datetime64[s]"), TypeError, r"X has dtype datetime64"),
    "wrong n_features": (np.zeros((4, 3)), nb.ShapeError,
                         r"Dense layer 1 expects 2 features, got X with shape \(4, 3\)"),
    "beyond float32": (np.array([[1e39, 0.0]]), ValueError,
                       r"X holds 1e\+39 at index \(0, 0\), beyond what float32 can hold"),
}

ENTRY_POINTS = {
    "predict": lambda model, X: model.predict(X),
    "forward": lambda model, X: model.forward(X),
    "evaluate": lambda model, X: model.evaluate(X, Y_XOR),
    "fit": lambda model, X: model.fit(X, Y_XOR, epochs=1),
    "train_step": lambda model, X: model.train_step(X, Y_XOR, "mse", nb.SGD()),
    "gradcheck": lambda model, X: nb.gradcheck(model, X, Y_XOR),
}


# gradcheck works in float64, where 1e39 is an ordinary number
X_CASES = [(case, entry) for case in BAD_X for entry in ENTRY_POINTS
           if (case, entry) != ("beyond float32", "gradcheck")]


@pytest.mark.parametrize("case, entry", X_CASES)
def test_every_entry_point_rejects_bad_X(backend, case, entry):
    X, error, message = BAD_X[case]
    model = xor_model(backend)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        ENTRY_POINTS[entry](model, X)
    assert_same_weights(model, before)


def test_fit_rejects_non_finite_device_array(backend):
    model = xor_model(backend)
    X = backend.asarray(np.array([[0.0, np.nan]] * 4), "float32")
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.fit(X, Y_XOR, epochs=1)


def test_fit_rejects_device_array_beyond_float32(backend):
    model = xor_model(backend)
    X = backend.asarray(np.full((4, 2), 1e39), "float64")
    with pytest.raises(ValueError, match="beyond what float32 can hold"):
        model.fit(X, Y_XOR, epochs=1)


def test_predict_single_sample_returns_1d():
    model = xor_model("numpy")
    assert model.predict([0.0, 1.0]).shape == (1,)


# -- arrays from another backend or device ------------------------------------------------
def test_numpy_model_rejects_array_api_strict_array():
    strict = pytest.importorskip("array_api_strict")
    model = xor_model("numpy")
    X = strict.asarray(X_XOR)
    with pytest.raises(TypeError, match=r"X is an array of array_api_strict but the model "
                                        r"runs on the numpy backend"):
        model.predict(X)


def test_model_rejects_array_on_another_device():
    strict = pytest.importorskip("array_api_strict")
    model = xor_model("array_api_strict")
    X = strict.asarray(X_XOR, device=strict.Device("CPU_DEVICE"))
    with pytest.raises(TypeError, match=r"X lives on device .*CPU_DEVICE.* but the model's "
                                        r"arrays are on .*device1"):
        model.fit(X, Y_XOR, epochs=1)
    with pytest.raises(TypeError, match=r"y lives on device"):
        model.fit(X_XOR, strict.asarray(Y_XOR, device=strict.Device("CPU_DEVICE")), epochs=1)


def test_backward_rejects_foreign_and_integer_gradients(backend):
    model = xor_model(backend)
    with pytest.raises(RuntimeError, match="backward needs a forward pass first"):
        model.backward(backend.asarray(np.zeros((4, 1)), "float32"))
    model.forward(X_XOR)
    with pytest.raises(nb.ShapeError, match=r"grad_out has shape \(3, 1\)"):
        model.backward(backend.asarray(np.zeros((3, 1)), "float32"))
    with pytest.raises(TypeError, match="grad_out has dtype int64; float32 or float64"):
        model.backward(backend.asarray(np.zeros((4, 1), np.int64)))
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="grad_out is an array of numpy"):
            model.backward(np.zeros((4, 1)))


TRAINING_PASSES = {
    "train_step": lambda model: model.train_step(X_XOR[:2], Y_XOR[:2], "mse", nb.SGD()),
    "fit": lambda model: model.fit(X_XOR[:2], Y_XOR[:2], epochs=1),
}
PREDICTIONS = {
    "predict": lambda model: model.predict(X_XOR[:2]),
    "evaluate": lambda model: model.evaluate(X_XOR[:2], Y_XOR[:2]),
    "forward(training=False)": lambda model: model.forward(X_XOR[:2], training=False),
}


@pytest.mark.parametrize("call", TRAINING_PASSES)
def test_backward_after_a_training_pass_is_refused(call):
    # that pass replaced what the layers saved from forward: backward would mix the two
    model = xor_model("numpy")
    out = model.forward(X_XOR)
    TRAINING_PASSES[call](model)
    with pytest.raises(RuntimeError, match="backward needs a forward pass first"):
        model.backward(out)


@pytest.mark.parametrize("call", PREDICTIONS)
def test_predictions_between_forward_and_backward_change_nothing(call):
    """Predictions save nothing in the layers: backward still backpropagates the forward."""
    expected_model, model = xor_model("numpy"), xor_model("numpy")
    out = model.forward(X_XOR)
    PREDICTIONS[call](model)
    grad_in = model.backward(out)
    expected = expected_model.backward(expected_model.forward(X_XOR))
    np.testing.assert_array_equal(grad_in, expected)
    for got, want in zip(model.get_gradients(), expected_model.get_gradients()):
        np.testing.assert_array_equal(got, want)


# -- targets ------------------------------------------------------------------------------
BAD_Y = {
    "fewer rows": ("mse", Y_XOR[:3], nb.ShapeError, r"y has 3 rows but X has 4"),
    "nan": ("mse", np.array([0.0, np.nan, 1.0, 0.0]), ValueError,
            r"y contains NaN or infinity \(first at index \(1,\)\)"),
    "strings": ("mse", np.array(["a", "b", "c", "d"]), TypeError, r"y has dtype <U1"),
    "None": ("mse", None, TypeError, r"y must be an array of numbers, got None"),
    "complex": ("mse", Y_XOR.astype(complex), TypeError, r"y has complex dtype"),
    "wrong columns": ("mse", np.zeros((4, 2)), nb.ShapeError,
                      r"y has shape \(4, 2\) but the model's output has shape \(4, 1\)"),
    "bce above 1": ("bce", 2 * Y_XOR, ValueError,
                    r"BinaryCrossEntropy needs targets in \[0, 1\]; y ranges from 0.0 to 2.0"),
    "bce below 0": ("bce", -Y_XOR, ValueError, r"needs targets in \[0, 1\]"),
}


@pytest.mark.parametrize("case", BAD_Y)
def test_fit_rejects_bad_targets(backend, case):
    loss, y, error, message = BAD_Y[case]
    model = xor_model(backend)
    with pytest.raises(error, match=message):
        model.fit(X_XOR, y, loss=loss, epochs=1)


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2, 3], r"class labels in y must be in \[0, 2\] for a model with 3 outputs, got "
                   r"labels from 0 to 3"),
    ([0, -1, 1, 2], r"got labels from -1 to 2"),
    ([0.0, 0.5, 1.0, 2.0], r"class labels in y must be whole numbers"),
    ([0, 1, 2, 2 ** 40], r"got labels from 0 to 1099511627776"),
])
def test_out_of_range_class_labels_are_refused_on_the_host(backend, labels, message):
    model = nb.MLP([2, 4, 3], output="softmax", backend=backend, seed=0)
    with pytest.raises(ValueError, match=message):
        model.fit(X_XOR, np.array(labels), loss="crossentropy", epochs=1)
    with pytest.raises(ValueError, match=message):
        nb.SoftmaxCrossEntropy().forward(model.forward(X_XOR), np.array(labels))


# -- scalar arguments of fit --------------------------------------------------------------
BAD_FIT_ARGUMENTS = {
    "lr zero": ({"lr": 0}, ValueError, r"lr must be a positive finite number, got 0"),
    "lr negative": ({"lr": -0.5}, ValueError, r"lr must be a positive finite number, got -0.5"),
    "lr nan": ({"lr": float("nan")}, ValueError, r"lr must be a positive finite number"),
    "lr inf": ({"lr": float("inf")}, ValueError, r"lr must be a positive finite number"),
    "lr string": ({"lr": "0.1"}, ValueError, r"lr must be a positive finite number, got '0.1'"),
    "epochs zero": ({"epochs": 0}, ValueError, r"epochs must be a positive integer, got 0"),
    "epochs float": ({"epochs": 2.5}, ValueError, r"epochs must be a positive integer, got 2.5"),
    "epochs bool": ({"epochs": True}, ValueError, r"epochs must be a positive integer, got True"),
    "batch_size zero": ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer"),
    "batch_size negative": ({"batch_size": -2}, ValueError, r"batch_size must be a positive"),
    "unknown loss": ({"loss": "hinge"}, ValueError,
                     r"unknown loss 'hinge'; valid names: mse, sse, binary_crossentropy"),
    "unknown optimizer": ({"optimizer": "rmsprop"}, ValueError,
                          r"unknown optimizer 'rmsprop'; valid names: sgd, adam"),
    "shuffle not bool": ({"shuffle": "yes"}, TypeError, r"shuffle must be True or False"),
    "verbose not 0, 1, 2": ({"verbose": 3}, ValueError,
                           r"verbose must be 0 \(or False\), 1 \(or True: a progress bar\) "
                           r"or 2 \(a line per epoch\), got 3"),
    "seed negative": ({"seed": -1}, ValueError, r"seed must be None or a non-negative integer"),
    "seed string": ({"seed": "abc"}, TypeError, r"seed must be None or a non-negative integer"),
    "alpha negative": ({"alpha": -1.0}, ValueError, r"alpha must be a number in \[0.0, inf\)"),
    "validation_data not a pair": ({"validation_data": X_XOR}, ValueError,
                                   r"validation_data must be a pair \(X_val, y_val\)"),
    "validation X wrong": ({"validation_data": (np.zeros((4, 3)), Y_XOR)}, nb.ShapeError,
                           r"expects 2 features, got X_val with shape \(4, 3\)"),
    "lr with an optimizer object": ({"optimizer": nb.SGD(), "lr": 0.1}, ValueError,
                                    r"lr is for an optimizer given by name"),
}


@pytest.mark.parametrize("case", BAD_FIT_ARGUMENTS)
def test_fit_rejects_bad_arguments(case):
    options, error, message = BAD_FIT_ARGUMENTS[case]
    options = {"epochs": 1, **options}
    with pytest.raises(error, match=message):
        xor_model("numpy").fit(X_XOR, Y_XOR, **options)


def test_train_step_rejects_negative_alpha_and_unknown_names():
    model = xor_model("numpy")
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0.0, inf\), got -1"):
        model.train_step(X_XOR, Y_XOR, "mse", nb.SGD(), alpha=-1)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        model.train_step(X_XOR, Y_XOR, "l1", nb.SGD())
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        model.train_step(X_XOR, Y_XOR, "mse", "lbfgs")


# -- a failed call changes nothing --------------------------------------------------------
def training_state(model, optimizer):
    """Host copies of everything a failed call must leave alone."""
    return {
        "weights": model.get_weights(),
        "optimizer": [nb.get_backend("numpy").to_numpy(model.backend.to_numpy(array))
                      for array in optimizer.state_arrays()],
        "iterations": optimizer.iterations,
        "history": model.history,
        "loss": list(model.history.loss),
    }


def assert_same_state(model, optimizer, before):
    after = training_state(model, optimizer)
    for name in ("weights", "optimizer"):
        assert len(after[name]) == len(before[name])
        for old, new in zip(before[name], after[name]):
            np.testing.assert_array_equal(old, new, err_msg=name)
    assert after["iterations"] == before["iterations"]
    assert after["history"] is before["history"]
    assert after["loss"] == before["loss"]


def assert_same_weights(model, before):
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


FAILING_CALLS = {
    "fit with y of the wrong length": lambda m, o: m.fit(X_XOR, Y_XOR[:3], optimizer=o),
    "fit with NaN in y": lambda m, o: m.fit(X_XOR, Y_XOR * np.nan, optimizer=o),
    "fit with bad validation data": lambda m, o: m.fit(
        X_XOR, Y_XOR, optimizer=o, validation_data=(X_XOR, Y_XOR[:2])),
    "fit with lr and an optimizer": lambda m, o: m.fit(X_XOR, Y_XOR, optimizer=o, lr=1.0),
    "fit with epochs=0": lambda m, o: m.fit(X_XOR, Y_XOR, optimizer=o, epochs=0),
    "fit with BCE targets above 1": lambda m, o: m.fit(X_XOR, 3 * Y_XOR, loss="bce",
                                                       optimizer=o),
    "train_step with strings": lambda m, o: m.train_step(X_XOR.astype(str), Y_XOR, "mse", o),
    "train_step with a 3-D X": lambda m, o: m.train_step(np.zeros((4, 2, 1)), Y_XOR, "mse", o),
    "set_weights with a wrong shape": lambda m, o: m.set_weights(
        [np.zeros((2, 3)), np.zeros(3), np.zeros((3, 2)), np.zeros(1)]),
    "set_weights with NaN in the last array": lambda m, o: m.set_weights(
        [np.zeros((2, 3)), np.zeros(3), np.zeros((3, 1)), np.array([np.nan])]),
    "predict with wrong features": lambda m, o: m.predict(np.zeros((2, 5))),
}


@pytest.mark.parametrize("call", FAILING_CALLS)
def test_failed_call_changes_nothing(backend, call):
    model = xor_model(backend)
    optimizer = nb.Adam(lr=0.05)
    model.fit(X_XOR, Y_XOR, optimizer=optimizer, epochs=3)
    before = training_state(model, optimizer)
    with pytest.raises((ValueError, TypeError)):
        FAILING_CALLS[call](model, optimizer)
    assert_same_state(model, optimizer, before)


# -- constructors -------------------------------------------------------------------------
BAD_CONSTRUCTORS = {
    "zero layer size": (lambda: nb.MLP([2, 0, 1]), ValueError,
                        r"layer_sizes\[1\] must be a positive integer, got 0"),
    "negative layer size": (lambda: nb.MLP([2, -3, 1]), ValueError, r"layer_sizes\[1\]"),
    "fractional layer size": (lambda: nb.MLP([2, 3.5, 1]), ValueError, r"got 3.5"),
    "one layer size": (lambda: nb.MLP([2]), ValueError, r"at least an input and an output"),
    "layer sizes not a list": (lambda: nb.MLP(5), TypeError, r"layer_sizes must be a list"),
    "unknown activation": (lambda: nb.MLP([2, 3, 1], activation="gelu"), ValueError,
                           r"unknown activation 'gelu'; valid names: sigmoid, tanh, relu"),
    "unknown activation, no hidden layer": (lambda: nb.MLP([2, 1], activation="gelu"),
                                            ValueError, r"unknown activation 'gelu'"),
    "unknown output": (lambda: nb.MLP([2, 1], output=3), ValueError, r"unknown activation 3"),
    "unknown init": (lambda: nb.MLP([2, 1], init="orthogonal"), ValueError,
                     r"unknown init 'orthogonal'; valid names: auto, glorot_uniform"),
    "bias not bool": (lambda: nb.MLP([2, 1], bias="no"), TypeError,
                      r"Dense bias must be True or False, got 'no'"),
    "unknown dtype": (lambda: nb.MLP([2, 1], dtype="float16"), ValueError,
                      r"dtype must be one of float32, float64, got 'float16'"),
    "unknown backend": (lambda: nb.MLP([2, 1], backend="tpu"), ValueError,
                        r"unknown backend 'tpu'; valid names: auto, numpy, cupy"),
    "backend of wrong type": (lambda: nb.get_backend(3), TypeError, r"backend must be a name"),
    "negative seed": (lambda: nb.MLP([2, 1], seed=-1), ValueError,
                      r"seed must be None or a non-negative integer, got -1"),
    "seed of wrong type": (lambda: nb.MLP([2, 1], seed="x"), TypeError, r"seed must be None"),
    "Dense zero units": (lambda: nb.Dense(2, 0), ValueError,
                         r"Dense n_out must be a positive integer, got 0"),
    "Dense string size": (lambda: nb.Dense("2", 3), ValueError, r"Dense n_in must be a positive"),
    "LeakyReLU slope": (lambda: nb.LeakyReLU(2), ValueError, r"negative_slope must be a number"),
    "no layers": (lambda: nb.Sequential([]), ValueError, r"needs at least one layer"),
    "layers None": (lambda: nb.Sequential(None), TypeError, r"layers must be a list"),
    "a non-layer": (lambda: nb.Sequential([nb.Dense(2, 1), "relu"]), TypeError,
                    r"layer 1 must be an nnback layer"),
    "only activations": (lambda: nb.Sequential([nb.ReLU()]), ValueError,
                         r"needs at least one Dense layer"),
    "sizes that do not chain": (lambda: nb.Sequential([nb.Dense(2, 3), nb.Dense(4, 1)]),
                                nb.ShapeError, r"Dense layer 2 expects 4 inputs but Dense "
                                               r"layer 1 gives 3"),
    "SGD lr zero": (lambda: nb.SGD(lr=0), ValueError, r"lr must be a positive finite number"),
    "SGD momentum 1": (lambda: nb.SGD(momentum=1.0), ValueError,
                       r"momentum must be a number in \[0.0, 1.0\), got 1.0"),
    "Nesterov without momentum": (lambda: nb.SGD(nesterov=True), ValueError,
                                  r"nesterov=True needs momentum > 0"),
    "Adam lr negative": (lambda: nb.Adam(lr=-1e-3), ValueError, r"lr must be a positive"),
    "Adam beta 1": (lambda: nb.Adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be"),
    "Adam betas not a pair": (lambda: nb.Adam(betas=0.9), ValueError,
                              r"betas must be a pair \(beta1, beta2\), got 0.9"),
    "Adam eps zero": (lambda: nb.Adam(eps=0.0), ValueError, r"eps must be a positive"),
}


@pytest.mark.parametrize("case", BAD_CONSTRUCTORS)
def test_constructors_reject_bad_arguments(case):
    make, error, message = BAD_CONSTRUCTORS[case]
    with pytest.raises(error, match=message):
        make()


def test_layer_sizes_accept_numpy_integers():
    model = nb.MLP([np.int64(2), np.int32(3), 1], backend="numpy", seed=0)
    assert model.layer_sizes == [2, 3, 1]
    assert all(type(size) is int for size in model.layer_sizes)


def test_one_layer_object_twice_is_refused():
    relu = nb.ReLU()
    with pytest.raises(ValueError, match="layer 3 .* is the same object as an earlier layer"):
        nb.Sequential([nb.Dense(2, 3), relu, nb.Dense(3, 3), relu, nb.Dense(3, 1)])


def test_layer_of_another_model_is_refused_and_that_model_keeps_its_weights():
    first = xor_model("numpy")
    before = first.get_weights()
    with pytest.raises(ValueError, match="layer 0 .* already belongs to a model"):
        nb.Sequential([first.layers[0], nb.Sigmoid()], backend="numpy", seed=1)
    assert_same_weights(first, before)
    # a copy of the layer is a new layer: building it leaves the first model alone
    nb.Sequential([copy.copy(first.layers[0]), nb.Sigmoid()], backend="numpy", seed=1)
    assert_same_weights(first, before)


def test_activation_instance_gives_each_hidden_layer_its_own_copy():
    # one ReLU object shared by two positions would make the first one's backward read the
    # second one's output: the gradients must equal those of activation="relu"
    by_name = nb.MLP([2, 4, 4, 1], activation="relu", backend="numpy", dtype="float64",
                     seed=0)
    by_object = nb.MLP([2, 4, 4, 1], activation=nb.ReLU(), backend="numpy",
                       dtype="float64", seed=0)
    assert by_object.layers[1] is not by_object.layers[3]
    gradients = []
    for model in (by_name, by_object):
        out = model.forward(X_XOR - 0.5)
        model.backward(out - Y_XOR.reshape(-1, 1))
        gradients.append(model.get_gradients())
    for expected, actual in zip(*gradients):
        np.testing.assert_array_equal(actual, expected)


# -- set_weights --------------------------------------------------------------------------
@pytest.mark.parametrize("weights, error, message", [
    ([], ValueError, r"set_weights expects 4 arrays \(W of Dense layer 1, b of Dense layer 1"),
    (None, TypeError, r"set_weights expects a list of 4 arrays .* got NoneType"),
    ("weights", TypeError, r"set_weights expects a list of 4 arrays .* got str"),
    ([np.zeros((3, 3)), np.zeros(3), np.zeros((3, 1)), np.zeros(1)], nb.ShapeError,
     r"W of Dense layer 1 must have shape \(2, 3\), got \(3, 3\)"),
    ([np.zeros((2, 3)), np.full(3, np.inf), np.zeros((3, 1)), np.zeros(1)], ValueError,
     r"b of Dense layer 1 contains NaN or infinity"),
    ([np.zeros((2, 3)), np.zeros(3), np.full((3, 1), 1e40), np.zeros(1)], ValueError,
     r"W of Dense layer 2 holds 1e\+40 .* beyond what float32 can hold"),
    ([np.zeros((2, 3)), np.zeros(3), np.zeros((3, 1)), np.array(["x"])], TypeError,
     r"b of Dense layer 2 has dtype <U1"),
])
def test_set_weights_rejects_bad_weights(backend, weights, error, message):
    model = xor_model(backend)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        model.set_weights(weights)
    assert_same_weights(model, before)


# -- losses -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["forward", "backward"])
def test_loss_rejects_bad_predictions(backend, method):
    def call(loss, pred, target):
        return getattr(loss, method)(pred, target)

    pred = backend.asarray(np.full((4, 1), 0.5), "float32")
    with pytest.raises(TypeError, match=r"pred must be an array of numpy, cupy or "
                                        r"array_api_strict .* got list"):
        call(nb.MSE(), [[0.5]] * 4, Y_XOR)
    with pytest.raises(nb.ShapeError, match=r"pred must be 2-D \(n_samples, n_outputs\), got "
                                            r"shape \(4,\)"):
        call(nb.MSE(), backend.asarray(np.full(4, 0.5), "float32"), Y_XOR)
    with pytest.raises(TypeError, match=r"pred has dtype int64; float32 or float64"):
        call(nb.MSE(), backend.asarray(np.zeros((4, 1), np.int64)), Y_XOR)
    with pytest.raises(ValueError, match=r"pred contains NaN or infinity"):
        call(nb.MSE(), backend.asarray(np.full((4, 1), np.nan), "float32"), Y_XOR)
    with pytest.raises(ValueError, match=r"BinaryCrossEntropy needs pred to be probabilities "
                                         r"in \[0, 1\].*from 1.5 to 1.5"):
        call(nb.BinaryCrossEntropy(), backend.asarray(np.full((4, 1), 1.5), "float32"), Y_XOR)
    with pytest.raises(nb.ShapeError, match=r"y has 3 rows but X has 4"):
        call(nb.MSE(), pred, Y_XOR[:3])
    with pytest.raises(ValueError, match=r"needs targets in \[0, 1\]"):
        call(nb.BinaryCrossEntropy(), pred, Y_XOR + 1)


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown loss 'l1'; valid names: mse, sse"):
        nb.losses.get_loss("l1")


# -- the helpers other modules (estimators, CLI) share ------------------------------------
def test_check_path_names_the_argument():
    with pytest.raises(TypeError, match=r"path must be a file name \(str or os.PathLike\), "
                                        r"got int"):
        validation.check_path(3)
    with pytest.raises(ValueError, match="path is empty"):
        validation.check_path("")
    assert validation.check_path(b"model.nnb") == "model.nnb"


def test_check_fits_accepts_values_inside_float32_range():
    inside = np.array([3.0e38, -3.0e38])
    assert validation.check_fits(inside, "float32", "X") is inside
    with pytest.raises(ValueError, match="X holds -4e\\+38 at index \\(1,\\)"):
        validation.check_fits(np.array([1.0, -4e38]), "float32", "X")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("size", [1, 8, 4096, 4097])
def test_all_finite_finds_every_nan_and_infinity_and_passes_extreme_finite_values(dtype,
                                                                                 size):
    from nnback.backend import all_finite

    values = np.random.default_rng(0).uniform(-1, 1, size).astype(dtype)
    assert all_finite(values) and all_finite(values.reshape(-1, 1)[::-1])
    for bad in (np.nan, np.inf, -np.inf):
        for index in {0, size // 2, size - 1}:
            broken = values.copy()
            broken[index] = bad
            assert not all_finite(broken), (bad, index)
    info = np.finfo(dtype)
    # the largest values cannot overflow the dot product; the smallest do not vanish wrongly
    for extreme in (info.max, -info.max, info.smallest_subnormal):
        assert all_finite(np.full(size, extreme, dtype=dtype)), extreme


def test_all_finite_under_strict_floating_point_settings():
    from nnback.backend import all_finite

    with np.errstate(all="raise"):  # an underflow in the dot product falls back, quietly
        assert all_finite(np.full(8, 1e-310))
        assert not all_finite(np.array([1.0, np.inf, -np.inf]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # +inf and -inf make the dot product warn
        assert not all_finite(np.array([np.inf, 2.0, -np.inf]))


def test_a_named_loss_is_one_shared_instance_and_the_name_is_still_checked():
    from nnback.losses import get_loss

    assert get_loss("mse") is get_loss("mse") and isinstance(get_loss(" MSE "), nb.MSE)
    assert get_loss(nb.MSE) is not get_loss(nb.MSE)  # a class gives a new instance
    with pytest.raises(ValueError, match="unknown loss 'msee'; valid names: mse, sse"):
        get_loss("msee")

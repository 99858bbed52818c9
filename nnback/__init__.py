"""nnback: multilayer perceptrons with readable backpropagation, written once against an
array module and run on NumPy (CPU) or CuPy (CUDA GPU).

    import nnback as nb
    model = nb.MLP([2, 3, 1], activation="sigmoid", output="sigmoid", seed=0)
    history = model.fit(X, y, loss="mse", lr=0.5, epochs=2000)
    model.predict(X)
"""
__version__ = "0.1.0"

from .backend import (Backend, BackendUnavailableError, DeviceOutOfMemoryError,
                      available_backends, get_backend)
from .layers import Dense, Exp, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .losses import (MSE, SSE, BinaryCrossEntropy, Loss, PoissonDeviance,
                     SoftmaxCrossEntropy)
from .optim import SGD, Adam, Optimizer
from .model import MLP, DivergenceError, History, Sequential
from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .training import TrainingInterrupted
from .validation import ShapeError
from .io import ModelFileError, load
from .gradcheck import gradcheck
from . import datasets, distributed

__all__ = [
    "Backend", "BackendUnavailableError", "DeviceOutOfMemoryError", "available_backends",
    "get_backend",
    "Dense", "Exp", "Identity", "LeakyReLU", "ReLU", "Sigmoid", "Softmax", "Tanh",
    "MSE", "SSE", "BinaryCrossEntropy", "Loss", "PoissonDeviance", "SoftmaxCrossEntropy",
    "SGD", "Adam", "Optimizer",
    "MLP", "DivergenceError", "History", "Sequential", "ShapeError",
    "Callback", "EarlyStopping", "ModelCheckpoint", "TrainingInterrupted",
    "ModelFileError", "load", "gradcheck", "datasets", "distributed",
]


def __getattr__(name):
    # The scikit-learn estimators load on first use, so that `import nnback` works without
    # scikit-learn; without it, this raises ImportError naming the extra to install.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'nnback' has no attribute {name!r}")

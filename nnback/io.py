"""save/load: models to and from the portable file of nnback.fileformat (arrays plus JSON
metadata, never pickled), on any backend. ``load`` reads the file (every check is there),
rebuilds the model from its description (an MLP when saved as one) and sets its weights.
"""
from .backend import get_backend
from .fileformat import FORMAT, FORMAT_VERSION, ModelFileError, checksum, read  # noqa: F401
from .layers import Dense
from .model import MLP, Sequential
from .validation import check_path


def save(model, path, extra=None):
    """Write ``model`` to ``path`` atomically (``model.save(path, extra=extra)``; see
    nnback.fileformat.write)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"save expects an nnback model (Sequential or MLP), got "
                        f"{type(model).__name__}")
    model.save(path, extra=extra)


def load(path, backend="auto", return_extra=False):
    """The model saved at ``path``, on ``backend`` ("auto" | "numpy" | "cupy" | a Backend),
    with the dtype it was saved with; with ``return_extra=True``, (model, extra) where extra
    is the dict given to save (empty if none). Raises ModelFileError (a ValueError) for a
    file that is damaged, tampered with, pickled or from a newer format; FileNotFoundError,
    PermissionError or IsADirectoryError when ``path`` cannot be opened."""
    path = check_path(path)
    backend = get_backend(backend)
    meta, layers, weights = read(path)
    try:
        model = _build(meta, layers, backend)
        model.set_weights(weights)
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise ModelFileError(f"{path}: its model cannot be rebuilt ({exc})") from None
    if not return_extra:
        return model
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise ModelFileError(f"{path}: its 'extra' metadata must be a JSON object, got "
                             f"{type(extra).__name__}")
    return model, extra


def _build(meta, layers, backend):
    """An MLP (when saved as one) or a Sequential of ``layers`` on ``backend``."""
    config = meta["model"]
    mlp = config.get("mlp")
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if config.get("class") != "MLP" or not isinstance(mlp, dict) or not dense:
        return Sequential(layers, backend=backend, dtype=meta["dtype"])
    sizes = [dense[0].n_in] + [layer.n_out for layer in dense]
    # the saved layers carry the activations' settings (a LeakyReLU's slope); a one-layer
    # MLP has no hidden activation, so only its name is kept
    hidden = layers[1] if len(dense) > 1 else mlp.get("activation")
    model = MLP(sizes, activation=hidden, output=layers[-1], bias=dense[0].bias,
                backend=backend, dtype=meta["dtype"], init="zeros")
    if [layer.get_config() for layer in model.layers] != \
            [layer.get_config() for layer in layers] or \
            [layer.kind for layer in model.layers] != [layer.kind for layer in layers]:
        raise ValueError("the MLP description does not match its layers")
    return model

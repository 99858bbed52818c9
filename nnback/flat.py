"""Flat buffers: many parameter-shaped arrays as consecutive pieces of one 1-D array.

A model keeps its parameters (and their gradients) as views of one flat array, so that an
optimizer updates them in one pass (:class:`FlatArrays`, ``views_of``); data-parallel
training sends all gradients in one message (``pack`` into a flat buffer, ``unpack`` back).
Shapes: flat: (total,), where total is the sum of the arrays' sizes, in order.
"""
import math

import array_api_compat


class FlatArrays(list):
    """A list of arrays that are consecutive views of the 1-D array ``flat``."""

    def __init__(self, arrays, flat):
        super().__init__(arrays)
        self.flat = flat

    def __reduce__(self):
        # a copy (or pickle) of a view is an array of its own: rebuild the views instead
        return views_of, (self.flat, [tuple(array.shape) for array in self])


def flat_pieces(arrays):
    """[arrays.flat] for FlatArrays (one array holds them all), else the arrays: what to
    copy or update to cover every array."""
    return [arrays.flat] if type(arrays) is FlatArrays else list(arrays)


def size_of(shapes):
    """The number of elements of arrays of ``shapes``, together."""
    return sum(math.prod(shape) for shape in shapes)


def views_of(flat, shapes):
    """FlatArrays of consecutive views of the 1-D ``flat``, shaped like ``shapes`` (their
    sizes add up to flat's)."""
    xp = array_api_compat.array_namespace(flat)
    views, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(xp.reshape(flat[start:start + size], tuple(shape)))
        start += size
    return FlatArrays(views, flat)


def pack(arrays, flat):
    """Copy ``arrays`` one after another into the 1-D ``flat`` (which may be longer)."""
    xp = array_api_compat.array_namespace(flat)
    start = 0
    for array in arrays:
        size = math.prod(array.shape)
        flat[start:start + size] = xp.reshape(array, (size,))
        start += size


def unpack(flat, arrays):
    """Copy the 1-D ``flat`` back into ``arrays`` (in place), in pack's order."""
    xp = array_api_compat.array_namespace(flat)
    start = 0
    for array in arrays:
        size = math.prod(array.shape)
        array[...] = xp.reshape(flat[start:start + size], tuple(array.shape))
        start += size


class FlatParameters:
    """The parameters of ``layers`` (Dense layers: W and b, gradients dW and db) moved into
    one flat array of ``dtype`` on ``backend``, keeping their values, and the gradients
    into another, made on the first ``gradients()`` call (a model that only predicts
    needs none). Each layer then holds views of them (``use_arrays``), so an optimizer
    updates every parameter in one pass over ``params.flat``."""

    def __init__(self, backend, dtype, layers):
        self.backend = backend
        self.dtype = dtype
        self.layers = layers
        self.shapes = [tuple(param.shape) for layer in layers for param in layer.parameters()]
        self.params = self._new_flat([p for layer in layers for p in layer.parameters()])
        self.grads = None
        self._hand_out()

    def gradients(self):
        """The gradients' FlatArrays (zeros when first made)."""
        if self.grads is None:
            self.grads = self._new_flat(None)
            self._hand_out()
        return self.grads

    def _new_flat(self, arrays):
        flat = self.backend.zeros((size_of(self.shapes),), self.dtype)
        if arrays is not None:
            pack(arrays, flat)
        return views_of(flat, self.shapes)

    def _hand_out(self):
        start = 0
        for layer in self.layers:
            stop = start + len(layer.parameters())
            layer.use_arrays(self.params[start:stop],
                             None if self.grads is None else self.grads[start:stop])
            start = stop

"""The tutorial data sets, as host NumPy float64 arrays (X: (n_samples, n_features),
y: (n_samples, 1)).

- xor(): the four XOR inputs and their labels.
- hours_studied(): hours studied and slept -> test score, for three students, scaled as the
  tutorial does (each input column by its maximum, scores by 100); also the new student
  (4 hours studied, 8 slept) scaled by the same maxima.
- weight_height(): four people's weight (lb − 135) and height (in − 66) -> 1 for female,
  0 for male; also the two new people, Emily (−7, −3) and Frank (20, 2).
"""
import numpy


def xor():
    """(X, y): X (4, 2) of 0/1 pairs, y (4, 1) = X₀ xor X₁."""
    X = numpy.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=numpy.float64)
    y = numpy.array([[0], [1], [1], [0]], dtype=numpy.float64)
    return X, y


HOURS_STUDIED_SLEPT = numpy.array([[2, 9], [1, 5], [3, 6]], dtype=numpy.float64)
TEST_SCORES = numpy.array([[92], [86], [89]], dtype=numpy.float64)
NEW_STUDENT = numpy.array([4, 8], dtype=numpy.float64)


def hours_studied(scaled=True):
    """(X, y, x_new): three students' (hours studied, hours slept) -> test score, and a new
    student's (4, 8). scaled: X and x_new divided by X's column maxima, y by 100 (as the
    tutorial does; it scales the new student by its own maximum, which is a bug: use the
    training maxima, as here). scaled=False gives the raw numbers."""
    X, y, x_new = HOURS_STUDIED_SLEPT.copy(), TEST_SCORES.copy(), NEW_STUDENT.copy()
    if scaled:
        column_max = X.max(axis=0)
        X, x_new, y = X / column_max, x_new / column_max, y / 100.0
    return X, y, x_new


PEOPLE = ("Alice", "Bob", "Charlie", "Diana")
WEIGHT_HEIGHT = numpy.array([[-2, -1], [25, 6], [17, 4], [-15, -6]], dtype=numpy.float64)
GENDER = numpy.array([[1], [0], [0], [1]], dtype=numpy.float64)
NEW_PEOPLE = {"Emily": numpy.array([-7.0, -3.0]), "Frank": numpy.array([20.0, 2.0])}


def weight_height():
    """(X, y, new): X (4, 2) = (weight − 135 lb, height − 66 in) of Alice, Bob, Charlie and
    Diana; y (4, 1) = 1 for female; new = {"Emily": (−7, −3), "Frank": (20, 2)}."""
    return WEIGHT_HEIGHT.copy(), GENDER.copy(), {k: v.copy() for k, v in NEW_PEOPLE.items()}

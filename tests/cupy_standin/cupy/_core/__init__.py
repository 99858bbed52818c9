"""cupy._core for the stand-in: only what code outside CuPy reaches into
(``_routines_linalg``'s compute types, ``flags``)."""

"""The CuPy stand-in for tests without a GPU: the ``cupy`` package in this folder (put the
folder first on sys.path), the recorded CuPy surfaces in ``surface/`` (``make_surface.py``)
and the CPU kernel engine ``cpu_kernels.py``. See README.md."""

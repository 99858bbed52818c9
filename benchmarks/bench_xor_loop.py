"""The XOR tutorial network's ``train_step`` (host arrays) and ``fit`` (per epoch) against
the hand-written NumPy loop, for whichever nnback is on the path: the same measurement of
two trees of the code, e.g. before and after a change.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=/path/to/other/checkout python benchmarks/bench_xor_loop.py

9 interleaved rounds, process CPU time, minimum kept (as ``python -m nnback bench --clock
cpu``). Needs nothing beyond nnback.
"""
import time

import nnback as nb
from nnback.bench import hand_numpy_xor_step
from nnback.datasets import xor
X, y = xor()
hand = hand_numpy_xor_step(X, y, 0.5)
def fit():
    m = nb.MLP([2, 3, 1], dtype="float64", seed=0)
    m.fit(X, y, loss="mse", optimizer="sgd", lr=0.5, epochs=2000, shuffle=False)
m = nb.MLP([2, 3, 1], dtype="float64", seed=0); opt = nb.SGD(lr=0.5)
def step(): m.train_step(X, y, "mse", opt)
def handfit():
    for _ in range(2000): hand()
clock = time.process_time
best = {"hand": 1e9, "fit": 1e9, "step": 1e9, "handfit": 1e9}
for _ in range(9):  # interleaved rounds, minimum kept
    for name, f, n in (("hand", hand, 2000), ("step", step, 2000), ("fit", fit, 1), ("handfit", handfit, 1)):
        t = clock(); [f() for _ in range(n)]; best[name] = min(best[name], (clock() - t) / n)
print(f"{nb.__file__}: train_step {best['step']*1e6:.1f} us = {best['step']/best['hand']:.2f} x hand step; "
      f"fit {best['fit']/2000*1e6:.1f} us/epoch = {best['fit']/best['handfit']:.2f} x hand loop")

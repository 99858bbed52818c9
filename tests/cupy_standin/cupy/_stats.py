"""Process-wide counters of what would cost time on a GPU, and the lock that guards them.

``LOCK`` (re-entrant) also guards the memory pools: take it for any shared state.
"""
import threading

LOCK = threading.RLock()

KEYS = ("device_to_host", "host_to_device", "allocations", "allocated_bytes",
        "kernel_launches")

_counts = dict.fromkeys(KEYS, 0)


def add(key, amount=1):
    with LOCK:
        _counts[key] += amount


def add_allocation(nbytes):
    with LOCK:
        _counts["allocations"] += 1
        _counts["allocated_bytes"] += nbytes


def snapshot():
    with LOCK:
        return dict(_counts)


def reset():
    with LOCK:
        for key in KEYS:
            _counts[key] = 0

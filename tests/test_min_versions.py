"""The minimum versions in pyproject.toml are tested, not claimed: nnback, from this working
tree, runs the README's quick start, a NumPy smoke subset of the test suite and the
scikit-learn estimators in a virtual environment holding exactly those floors, made from the
lowest Python that requires-python accepts and this machine has (else the running one: a
fallback, which the output says). tests/min_versions.py builds it once and caches it; a first
build takes seconds to a minute.

Skipped only where no release of a floor's series has a wheel for that Python and an older
Python that pyproject accepts has them (the message names it); `-rA` or `-s` shows the
versions each run used.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

import min_versions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Test files that need nothing beyond numpy, array-api-compat and pytest at import time (what
# needs more calls pytest.importorskip or a backend fixture that skips), and take seconds.
SMOKE_FILES = ["tests/test_tutorials.py", "tests/test_model.py", "tests/test_layers.py",
               "tests/test_losses.py", "tests/test_optim.py", "tests/test_gradcheck.py",
               "tests/test_io.py", "tests/test_validation.py"]
SMOKE_SELECTION = ["-m", "not gpu and not slow",
                   "-k", "not array_api_strict and not cupy and not torch"]
# The smoke run is about NumPy: conftest's CuPy stand-in stays off (that has its own tests)
SMOKE_ENVIRON = {"NNBACK_TEST_CUPY": "off"}
# The import names of the floors whose __version__ is compared as well
MODULES = {"numpy": "numpy", "array-api-compat": "array_api_compat", "scikit-learn": "sklearn"}

# Runs a block of a Markdown page, compiled under the page's own name and line numbers so that
# a traceback points into the page: argv = page, first line; the block comes on stdin.
BLOCK_RUNNER = """\
import sys
page, first = sys.argv[1], int(sys.argv[2])
code = compile("\\n" * (first - 1) + sys.stdin.read(), page, "exec")
exec(code, {"__name__": "__main__"})
"""

ESTIMATOR_SMOKE = """\
import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nnback as nb

X, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_classes=3,
                           random_state=0)
classifier = nb.MLPClassifier(max_iter=50, random_state=0)
predicted = classifier.fit(X, y).predict(X)
assert predicted.shape == y.shape and set(np.unique(predicted)) <= set(np.unique(y)), predicted
accuracy = float((predicted == y).mean())
assert accuracy > 0.6, f"training accuracy {accuracy:.2f} after 50 epochs"
assert classifier.predict_proba(X).shape == (len(X), 3)

pipeline = make_pipeline(StandardScaler(), clone(classifier)).fit(X, y)
assert pipeline.score(X, y) > 0.6

regressor = nb.MLPRegressor(max_iter=50, random_state=0).fit(X, X[:, 0] - X[:, 1])
assert regressor.predict(X).shape == (len(X),)
print(f"MLPClassifier training accuracy {accuracy:.2f} with scikit-learn {sklearn.__version__}")
"""

VERSIONS = """\
import importlib, importlib.util, json, sys
from importlib import metadata
names, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "distributions": {name: metadata.version(name) for name in names},
    "modules": {name: importlib.import_module(module).__version__
                for name, module in modules.items()},
    "nnback": importlib.util.find_spec("nnback").origin,
    "python": sys.version.split()[0],
}))
"""


@pytest.fixture(scope="module")
def env():
    try:
        built = min_versions.ensure_env(log=print)
    except min_versions.FloorsUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nfloor environment ({'cached' if built.cached else 'built now'}): "
          f"{built.describe()}")
    return built


def run_checked(env, what, args, timeout, cwd=None, stdin=None, lines=30, environ=None):
    """Run the venv's Python; on a non-zero exit or a timeout, fail with the tail of what it
    wrote. Returns the CompletedProcess."""
    try:
        result = env.run(args, timeout=timeout, cwd=cwd, stdin=stdin, environ=environ)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish within {timeout} s on {env.describe()}\n"
                    f"{tail(exc.stdout)}\n{tail(exc.stderr)}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed on the minimum versions (exit code {result.returncode}): "
                    f"{env.describe()}\n"
                    f"--- stdout (last lines) ---\n{tail(result.stdout, lines)}\n"
                    f"--- stderr (last lines) ---\n{tail(result.stderr, lines)}", pytrace=False)
    print(result.stdout)
    return result


def tail(text, lines=30):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def quick_start():
    """(first line, source) of the first ```python block after README's "## Quick start"."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("## Quick start")
    opening = next(i for i in range(start + 1, len(lines))
                   if re.match(r"^```\s*python\b", lines[i]) or lines[i].startswith("## "))
    assert lines[opening].startswith("```"), "README.md: no ```python block in ## Quick start"
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].strip() == "```")
    return opening + 2, "\n".join(lines[opening + 1:closing]) + "\n"


def test_the_environment_holds_exactly_the_floors(env):
    pins = env.pins
    modules = {name: module for name, module in MODULES.items() if name in pins}
    result = run_checked(env, "reading the installed versions",
                         ["-c", VERSIONS, json.dumps(sorted(pins)), json.dumps(modules)],
                         timeout=120)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    record, base = env.record, min_versions.interpreter()
    print(f"minimum versions tested: Python {seen['python']} ({record['python_choice']}), "
          + ", ".join(f"{name} {version}" for name, version in seen["distributions"].items()))
    for name, pin in record["pins"].items():
        floor = min_versions.Floor(name, "", pin["floor"], "")
        assert seen["distributions"][name] == pin["version"], (name, seen, pin)
        if name in modules:
            assert Version(seen["modules"][name]) == Version(
                pin["version"]), f"{modules[name]}.__version__ is {seen['modules'][name]}"
        # the floor itself, or the lowest of its series that has a wheel here (and why)
        assert floor.in_series(pin["version"]), pin
        if Version(pin["version"]) != Version(pin["floor"]):
            print(f"note: {pin['reason']}")
    assert Path(seen["nnback"]).resolve().is_relative_to(ROOT), seen["nnback"]
    # made from the chosen interpreter: requires-python's floor where this machine has it
    assert seen["python"] == record["python"] == base.version, (seen["python"], record)
    assert record["python_is_floor"] == base.is_floor, record


def test_readme_quick_start_runs_on_the_floors(env, tmp_path):
    first, source = quick_start()
    run_checked(env, f"README.md's quick start (line {first})",
                ["-c", BLOCK_RUNNER, str(ROOT / "README.md"), str(first)],
                timeout=180, cwd=tmp_path, stdin=source)


def test_numpy_smoke_subset_passes_on_the_floors(env):
    gone = [name for name in SMOKE_FILES if not (ROOT / name).is_file()]
    assert not gone, f"SMOKE_FILES names missing files {gone}: update it"
    run_checked(env, "the NumPy smoke subset of the tests",
                ["-m", "pytest", *SMOKE_FILES, *SMOKE_SELECTION, "-q", "-p", "no:cacheprovider",
                 "--tb=short", "--maxfail=3", "-rfE"], timeout=300, lines=60,
                environ=SMOKE_ENVIRON)


def test_estimators_fit_with_the_floor_scikit_learn(env, tmp_path):
    if "scikit-learn" not in env.pins:
        pytest.skip("scikit-learn is not among pyproject's floors (extra 'sklearn')")
    run_checked(env, "MLPClassifier/MLPRegressor fit and predict", ["-c", ESTIMATOR_SMOKE],
                timeout=180, cwd=tmp_path)

"""scikit-learn's own estimator checks for nnback.MLPClassifier and nnback.MLPRegressor.

scikit-learn runs these checks on its own MLPs with max_iter=100 (INIT_PARAMS in
sklearn/utils/_test_common/instance_generator.py) and marks none of them as expected to fail
(its PER_ESTIMATOR_XFAIL_CHECKS has no MLP entry), so none are skipped or xfailed here
either. The sample-weight checks scikit-learn adds for its MLPs do not run: these estimators
take no sample_weight, and the checks are only yielded for estimators whose fit does.
"""
import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from nnback import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ESTIMATORS = [MLPClassifier(max_iter=100, backend="numpy"),
              MLPRegressor(max_iter=100, backend="numpy")]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)

"""The training loop's numbers do not drift: estimators and model.fit give the weights
recorded in tests/data/estimator_reference.npz (by tests/estimator_reference.py, before
the redesign of issue 14) to 1e-12 in float64."""
import numpy
import pytest

import estimator_reference as reference

pytest.importorskip("sklearn")
RECORDED = dict(numpy.load(reference.PATH))


def _recorded(name):
    return {key.split("/", 1)[1]: value for key, value in RECORDED.items()
            if key.startswith(name + "/")}


@pytest.mark.parametrize("name", sorted(reference.CASES))
def test_estimator_matches_its_recorded_weights(name):
    expected = _recorded(name)
    got = reference.record(reference.fit(name))
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        numpy.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", sorted(reference.MODEL_CASES))
def test_model_fit_matches_its_recorded_weights(name):
    expected = _recorded(name)
    model, history = reference.fit_model(name)
    got = {f"weight{i}": weight for i, weight in enumerate(model.get_weights())}
    got.update(loss_curve=numpy.array(history.loss), val_loss=numpy.array(history.val_loss))
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        numpy.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)

"""Scenario A reports t_eps under both grokking-time conventions (issue 15)."""

from types import SimpleNamespace

import numpy as np

from tnattn.experiments import scenario_a


def test_stays_zero_t_eps_known_answers():
    # Epoch e is column e - 1; a test epoch counts as zero only when every length is error-free, and
    # nan marks an epoch without a test. Member 0: first zero at epoch 2, nonzero again at epoch 3,
    # zero from epoch 4 to its last record -> stays zero from epoch 4. Member 1: the short length
    # is still wrong at epoch 2, so both conventions give epoch 3. Member 2 never reaches zero.
    nan = np.nan
    cols = {
        "test_error_100": np.array([[0.2, 0.0, 0.1, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0, nan], [0.3, 0.2, 0.1, 0.1, 0.1]]),
        "test_error_20": np.array([[0.1, 0.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.0, nan, nan], [0.2, 0.2, 0.2, 0.2, 0.2]]),
    }
    merged = SimpleNamespace(history=SimpleNamespace(column=lambda name: cols[name]))
    got = scenario_a._stays_zero_t_eps(merged, SimpleNamespace(test_lengths=(100, 20)))
    np.testing.assert_array_equal(got, [4.0, 3.0, nan])

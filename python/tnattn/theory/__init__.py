"""Perceptron grokking theory (paper, Section 3): closed forms and vectorised simulators.

See also the documentation: Science, "Perceptron grokking theory".

* :mod:`tnattn.theory.perceptron_1d` -- the 1D exponential model (bias-only perceptron);
* :mod:`tnattn.theory.ball` -- the D-dimensional ball model (weights only, no bias).

Both modules work in numpy (float64) with seeded ``numpy.random.Generator`` objects; the
simulators run thousands of independent data sets per call.
"""

from tnattn.theory import ball, perceptron_1d

__all__ = ["ball", "perceptron_1d"]

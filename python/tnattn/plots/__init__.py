"""Matplotlib figures, one submodule per family (training, theory, structure).

Figures are drawn with the non-interactive Agg backend, so they work on machines without a screen.
"""

import matplotlib

matplotlib.use("Agg", force=False)

__all__: list[str] = []

"""TN-attention models: the layer, stacks, initialisations and exact constructions.

- :class:`TNAttention`: one uniform TN-attention layer (``nn.Module``);
- :class:`TNAttentionStack`: layers whose per-site outputs feed the next layer;
- :func:`exact_rule30`, :func:`exact_local_rule`, :func:`exact_contexts`: hand-built contexts that
  encode the neighbourhood exactly (train only ``C``);
- :mod:`tnattn.models.init`: initialisation schemes and boundary vectors;
- :mod:`tnattn.models.functional`: the forward pass as functions of stacked parameters
  (:class:`Params`, E members), which :class:`TNAttention` and the trainers call;
- :mod:`tnattn.models.head`: the head and the losses, each with its closed-form gradient.

A model holds one member, or E members built with ``seeds=[...]`` whose parameters lead with E.
"""

from . import functional, head
from ._backend import BACKENDS
from .exact import exact_contexts, exact_local_rule, exact_rule30
from .init import BOUNDARIES, INITS
from .functional import Params
from .layer import ACTIVATIONS, NonFiniteParameterError, TNAttention
from .stack import TNAttentionStack

__all__ = [
    "TNAttention",
    "TNAttentionStack",
    "Params",
    "NonFiniteParameterError",
    "exact_rule30",
    "exact_local_rule",
    "exact_contexts",
    "ACTIVATIONS",
    "BACKENDS",
    "BOUNDARIES",
    "INITS",
]


"""Stacked TN-attention layers: each layer's per-site outputs embed the next layer's input."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .layer import TNAttention

__all__ = ["TNAttentionStack"]


class TNAttentionStack(nn.Module):
    """A deep TN-attention network.

    Layer ``k`` maps its input to per-site vectors of size ``c_k`` (after its own activation);
    these are the real embeddings, shape (N, M, c_k), that layer ``k+1`` reads, so layer ``k+1``
    must have ``d == c_k``. The first layer reads integer symbols or embeddings like
    :class:`TNAttention`. Layers of E members each (built with ``seeds``) form E stacks at once:
    layer ``k``'s outputs (E, N, M, c_k) are layer ``k+1``'s per-member embeddings.

    Parameters
    ----------
    layers : sequence of TNAttention
        At least one layer; consecutive layers must satisfy ``layers[k+1].d == layers[k].c``.

    Attributes
    ----------
    layers : nn.ModuleList
    d : int
        Input alphabet of the first layer.
    c : int
        Outputs of the last layer.
    """

    def __init__(self, layers: Sequence[TNAttention]):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one TNAttention layer")
        for k, layer in enumerate(layers):
            if not isinstance(layer, TNAttention):
                raise TypeError(f"layers[{k}] must be a TNAttention, got {type(layer).__name__}")
            if k and layer.d != layers[k - 1].c:
                raise ValueError(
                    f"layers[{k}].d = {layer.d} must equal layers[{k - 1}].c = {layers[k - 1].c}"
                )
        self.layers = nn.ModuleList(layers)
        self.d, self.c = layers[0].d, layers[-1].c

    @classmethod
    def build(cls, D: int, depth: int, d: int = 2, c_hidden: int = 2, c: int = 1, **kwargs) -> "TNAttentionStack":
        """``depth`` layers of bond dimension ``D``: d -> c_hidden -> ... -> c_hidden -> c.

        Parameters
        ----------
        D : int
            Bond dimension of every layer.
        depth : int
            Number of layers (1 gives a single d -> c layer).
        d, c_hidden, c : int
            Input alphabet, hidden output size, final output size.
        **kwargs
            Passed to every :class:`TNAttention`; a ``generator`` is shared, so the layers are
            initialised one after another from its stream.
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        sizes = [d] + [c_hidden] * (depth - 1) + [c]
        return cls([TNAttention(D, sizes[k], sizes[k + 1], **kwargs) for k in range(depth)])

    def hidden(self, x: Tensor) -> list[Tensor]:
        """Inputs of every layer: ``[x, out_0, ..., out_{depth-2}]`` (out_k shape (N, M, c_k))."""
        inputs = [x]
        for layer in self.layers[:-1]:
            inputs.append(layer(inputs[-1]))
        return inputs

    def _last_input(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = layer(x)
        return x

    def logits(self, x: Tensor) -> Tensor:
        """Logits of the last layer; x as for :class:`TNAttention`; shape (N, M, c)."""
        return self.layers[-1].logits(self._last_input(x))

    def forward(self, x: Tensor) -> Tensor:
        """Output of the last layer (after its activation); shape (N, M, c)."""
        return self.layers[-1](self._last_input(x))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted symbols of the last layer; shape (N, M), int64."""
        return self.layers[-1].predict(self._last_input(x))

    def set_trainable(
        self, *, contexts: bool | None = None, classifier: bool | None = None, boundary: bool | None = None
    ) -> "TNAttentionStack":
        """:meth:`TNAttention.set_trainable` on every layer; returns ``self``."""
        for layer in self.layers:
            layer.set_trainable(contexts=contexts, classifier=classifier, boundary=boundary)
        return self

    def extra_repr(self) -> str:
        return f"depth={len(self.layers)}, d={self.d}, c={self.c}"

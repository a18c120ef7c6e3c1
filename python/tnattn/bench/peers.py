"""What users would otherwise run to get all M local maps: generic tensor-network toolkits.

Both peers here compute, for every site i, a full contraction of the network that ends in site i's
output, independently of the other sites. That is O(M) work per output and O(M^2) per sequence,
against O(M) for the sliding contexts of :func:`tnattn.ops.tn_attention` (and of the reference
loop), so they are benchmarked on a small-M range only.

* :func:`einsum_all_sites` -- ``opt_einsum``: per site, one contraction of
  u A_L[x_0] ... A_L[x_{i-1}] C A_R[x_{i+1}] ... A_R[x_{M-1}] v over the batch, its path
  optimised once per (M, i) and cached. Same model as tnattn (open boundaries, separate tensors)
  except the per-step normalisation, which a generic contraction does not do: the result is
  tnattn's local map times |l~_i| |r~_i| (the norms of the unnormalised contexts), i.e. the same
  direction; the products over/underflow for long sequences.
* :class:`TensorKrowchAllSites` -- TensorKrowch's uniform MPS layer (``UMPSLayer``). It has one
  output node, with no input leg, on a periodic ring of one shared tensor. Getting all M outputs
  means M contractions: the batch is expanded to N*M cyclic shifts of the sequence with site i
  removed (output node last in the ring), and the output node has d*c labels so that the symbol at
  site i selects its row, as in tnattn's W_i[s, o]. What it cannot do: open boundary vectors u, v
  (always periodic, so the numbers differ from tnattn's), separate left/right tensors,
  normalised contexts (long products over/underflow), one pass for all outputs, and a length
  that is not fixed at construction (a new layer, or a new trace, per M).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["einsum_all_sites", "einsum_available", "tensorkrowch_available", "TensorKrowchAllSites"]


def einsum_available() -> bool:
    """True when ``opt_einsum`` can be imported."""
    return importlib.util.find_spec("opt_einsum") is not None


def tensorkrowch_available() -> bool:
    """True when ``tensorkrowch`` can be imported."""
    return importlib.util.find_spec("tensorkrowch") is not None


@lru_cache(maxsize=4096)
def _site_expression(M: int, i: int, N: int, D: int, d: int, c: int):
    """opt_einsum expression for site i: operands u, A_L[x_j] (j < i), C, A_R[x_j] (j > i), v."""
    import opt_einsum as oe

    sym = oe.get_symbol
    n, s, o = sym(0), sym(1), sym(2)
    left = [sym(3 + j) for j in range(i + 1)]  # a_0 .. a_i: bonds of the left chain
    right = [sym(3 + i + 1 + j) for j in range(M - i)]  # b_i .. b_{M-1}: bonds of the right chain
    terms = [left[0]]
    shapes: list[tuple[int, ...]] = [(D,)]
    for j in range(i):
        terms.append(n + left[j] + left[j + 1])
        shapes.append((N, D, D))
    terms.append(s + left[i] + right[0] + o)
    shapes.append((d, D, D, c))
    for j in range(M - 1 - i):
        terms.append(n + right[j] + right[j + 1])
        shapes.append((N, D, D))
    terms.append(right[-1])
    shapes.append((D,))
    eq = ",".join(terms) + "->" + n + s + o
    return oe.contract_expression(eq, *shapes, optimize="auto")


def einsum_all_sites(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """All M local maps by one independent full contraction per site (opt_einsum, torch backend).

    Parameters
    ----------
    x : Tensor, shape (N, M), integer symbols
    A_left, A_right : Tensor, shape (d, D, D)
    C : Tensor, shape (d, D, D, c)
    u, v : Tensor, shape (D,)

    Returns
    -------
    Tensor, shape (N, M, d, c)
        Unnormalised local maps: tnattn's W_i times |l~_i| |r~_i| (see the module docstring).
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or x.is_floating_point():
        raise ValueError("x must be an (N, M) tensor of integer symbols")
    if u.dim() != 1 or v.dim() != 1:
        raise ValueError("u and v must be shared boundary vectors of shape (D,)")
    N, M = x.shape
    d, D, c = C.shape[0], C.shape[1], C.shape[3]
    GL = A_left[x.long()]  # (N, M, D, D)
    GR = A_right[x.long()]
    outs = []
    for i in range(M):
        expr = _site_expression(M, i, N, D, d, c)
        ops = [u, *GL[:, :i].unbind(1), C, *GR[:, i + 1 :].unbind(1), v]
        outs.append(expr(*ops, backend="torch"))
    return torch.stack(outs, dim=1)


class TensorKrowchAllSites(torch.nn.Module):
    """All M outputs with TensorKrowch's ``UMPSLayer`` (one output node; see the module docstring).

    Parameters
    ----------
    A : Tensor, shape (d, D, D)
        The shared (uniform) tensor.
    C : Tensor, shape (d, D, D, c)
        Classification tensor; becomes the output node (D, d*c, D).
    M : int
        Sequence length (the layer has M nodes: the output node and M - 1 inputs).
    """

    def __init__(self, A: Tensor, C: Tensor, M: int):
        super().__init__()
        import tensorkrowch as tk

        if M < 2:
            raise ValueError(f"M must be >= 2 (one output node and at least one input), got {M}")
        d, D, c = C.shape[0], C.shape[1], C.shape[3]
        self.M, self.d, self.c = M, d, c
        uniform = A.detach().permute(1, 0, 2).contiguous()  # (D, d, D): left, input, right
        out = C.detach().permute(1, 0, 3, 2).reshape(D, d * c, D).contiguous()  # (D, d*c, D)
        # Output node last: the ring after it starts at site i+1. (tensorkrowch 1.1.6 reads the
        # uniform tensor from the first node and the output tensor from the last one of its
        # expanded list, so out_position=0 would swap the two tensors.)
        self.layer = tk.models.UMPSLayer(n_features=M, tensors=[uniform, out], out_position=M - 1)
        M1 = torch.arange(M)
        self.register_buffer("_shifts", (M1[:, None] + torch.arange(1, M)[None, :]) % M, persistent=False)
        self._traced_batch = None

    def embed(self, x: Tensor) -> Tensor:
        """One-hot inputs (N*M, M-1, d): for output site i, x_{i+1}, ..., x_{i-1} cyclically."""
        N = x.shape[0]
        seq = x.long()[:, self._shifts].reshape(N * self.M, self.M - 1)
        return torch.nn.functional.one_hot(seq, self.d).to(self.layer.out_node.tensor.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, M) integer symbols -> (N, M, d, c) periodic-boundary local maps."""
        if x.dim() != 2 or x.shape[1] != self.M:
            raise ValueError(f"x must have shape (N, {self.M}), got {tuple(x.shape)}")
        data = self.embed(x)
        if self._traced_batch != data.shape[0]:
            self.layer.trace(data)  # TensorKrowch's recommended set-up pass before timing
            self._traced_batch = data.shape[0]
        y = self.layer(data)  # (N*M, d*c)
        return y.reshape(x.shape[0], self.M, self.d, self.c)

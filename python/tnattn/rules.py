"""Teachers: K-local rules on sequences over a small alphabet.

A K-local rule maps an input sequence ``x`` (length M, symbols in ``[0, d)``) to an output
sequence ``y`` of the same length, where ``y_i`` depends only on the window
``(x_{i-K}, ..., x_{i+K})``. A rule is stored as a truth table over the ``d**(2K+1)`` windows;
the window ``(w_0, ..., w_{2K})`` has index ``sum_j w_j d**(2K-j)`` (leftmost cell most
significant), which for ``d = 2, K = 1`` is exactly Wolfram's numbering of elementary cellular
automata: bit ``k`` of the rule number is the output for the neighbourhood that reads as ``k``.

Boundaries
----------
``"open"``
    Cells outside the sequence read as 0 (the paper's choice and its code's).
``"periodic"``
    The sequence is a ring.

Iterated rules (``rule.iterate(j)``) apply the one-step rule ``j`` times, imposing the boundary
condition at every step, as a cellular automaton does. In the bulk this is the ``jK``-local rule
whose table :meth:`IteratedRule.window_table` returns; with open boundaries the two differ within
``jK`` sites of the ends (the composite window would see the first step's nonzero outputs at the
virtual cells outside the sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["LocalRule", "IteratedRule", "elementary", "random_rule", "from_truth_table", "BOUNDARIES"]

BOUNDARIES = ("open", "periodic")


def _check_symbols(x: torch.Tensor, d: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of integer symbols, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"x must hold integer symbols, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, M), got {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= d):
        raise ValueError(f"x holds symbols outside [0, {d}): min {int(x.min())}, max {int(x.max())}")
    return x.long()


def _pad(x: torch.Tensor, K: int, boundary: str) -> torch.Tensor:
    """Extend (N, M) by K cells on each side according to the boundary condition."""
    if boundary == "open":
        return torch.nn.functional.pad(x, (K, K), value=0)
    # Periodic: index modulo M also covers K > M (a ring shorter than the window).
    M = x.shape[1]
    idx = torch.arange(-K, M + K, device=x.device) % M
    return x[:, idx]


@dataclass(frozen=True)
class LocalRule:
    """A K-local rule given by its truth table.

    Parameters
    ----------
    table : torch.Tensor
        Shape ``(d**(2K+1),)``, integer outputs in ``[0, d_out)``; entry ``k`` is the output for the
        window whose base-``d`` digits (leftmost most significant) read as ``k``.
    K : int
        Radius: the window is ``2K + 1`` cells.
    d : int
        Input alphabet size.
    boundary : {"open", "periodic"}
        Boundary condition.
    name : str
        Human-readable name.
    """

    table: torch.Tensor
    K: int
    d: int = 2
    boundary: str = "open"
    name: str = field(default="")

    def __post_init__(self):
        if self.K < 0:
            raise ValueError(f"K must be >= 0, got {self.K}")
        if self.d < 2:
            raise ValueError(f"d must be >= 2, got {self.d}")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {self.boundary!r}")
        table = torch.as_tensor(self.table).long().flatten()
        expected = self.d ** (2 * self.K + 1)
        if table.numel() != expected:
            raise ValueError(f"table must have d**(2K+1) = {expected} entries, got {table.numel()}")
        if table.numel() and int(table.min()) < 0:
            raise ValueError("table entries must be >= 0")
        object.__setattr__(self, "table", table)

    @property
    def window(self) -> int:
        """Number of input cells each output depends on (``2K + 1``)."""
        return 2 * self.K + 1

    @property
    def d_out(self) -> int:
        """Output alphabet size (at least 2, at least one more than the largest table entry)."""
        return max(2, int(self.table.max()) + 1)

    def window_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the window around every site.

        Parameters
        ----------
        x : torch.Tensor
            Shape (N, M), integer symbols in ``[0, d)``.

        Returns
        -------
        torch.Tensor
            Shape (N, M), int64 indices into :attr:`table`.
        """
        x = _check_symbols(x, self.d)
        padded = _pad(x, self.K, self.boundary)
        M = x.shape[1]
        index = torch.zeros_like(x)
        for j in range(self.window):  # 2K+1 vectorised passes, no loop over sites
            index = index * self.d + padded[:, j : j + M]
        return index

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the rule: the :attr:`table` entry of every site's window (:meth:`window_indices`);
        ``x`` as there, the outputs are int64 of the same shape (N, M)."""
        return self.table.to(x.device)[self.window_indices(x)]

    def with_boundary(self, boundary: str) -> "LocalRule":
        """The same rule with another boundary condition."""
        return LocalRule(self.table, self.K, self.d, boundary, self.name)

    def iterate(self, steps: int) -> "IteratedRule":
        """The rule applied ``steps`` times (a ``steps*K``-local rule in the bulk)."""
        return IteratedRule(self, steps)

    def __repr__(self) -> str:
        return f"LocalRule(name={self.name!r}, K={self.K}, d={self.d}, boundary={self.boundary!r})"


@dataclass(frozen=True)
class IteratedRule:
    """A one-step rule applied ``steps`` times, with the boundary imposed at every step.

    Parameters
    ----------
    base : LocalRule
        The one-step rule; its output alphabet must equal its input alphabet.
    steps : int
        Number of applications (>= 1).
    """

    base: LocalRule
    steps: int

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.base.d_out > self.base.d:
            raise ValueError("an iterated rule needs outputs in the input alphabet")

    @property
    def K(self) -> int:
        return self.steps * self.base.K

    @property
    def d(self) -> int:
        return self.base.d

    @property
    def d_out(self) -> int:
        return self.base.d

    @property
    def boundary(self) -> str:
        return self.base.boundary

    @property
    def name(self) -> str:
        return f"{self.base.name}^{self.steps}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the base rule ``steps`` times; shape (N, M) -> (N, M)."""
        for _ in range(self.steps):
            x = self.base(x)
        return x

    def with_boundary(self, boundary: str) -> "IteratedRule":
        return IteratedRule(self.base.with_boundary(boundary), self.steps)

    def window_table(self) -> LocalRule:
        """The bulk truth table as a ``steps*K``-local :class:`LocalRule`.

        Computed by applying the base rule ``steps`` times to every window with periodic
        boundaries and reading the centre cell, which only sees cells inside the window.
        """
        K, d = self.K, self.d
        n = 2 * K + 1
        digits = torch.arange(d**n).unsqueeze(1) // (d ** torch.arange(n - 1, -1, -1)) % d
        y = digits
        periodic = self.base.with_boundary("periodic")
        for _ in range(self.steps):
            y = periodic(y)
        return LocalRule(y[:, K], K, d, self.boundary, self.name)

    def iterate(self, steps: int) -> "IteratedRule":
        return IteratedRule(self.base, self.steps * steps)


def elementary(number: int, boundary: str = "open") -> LocalRule:
    """Elementary cellular automaton by Wolfram number.

    Parameters
    ----------
    number : int
        Rule number in ``[0, 255]``; bit ``k`` is the output for the neighbourhood
        ``(x_{i-1}, x_i, x_{i+1})`` read as the binary number ``k``. Rule 30 is
        ``y_i = x_{i-1} XOR (x_i OR x_{i+1})``.
    boundary : {"open", "periodic"}
        Boundary condition.
    """
    if not isinstance(number, int) or not 0 <= number <= 255:
        raise ValueError(f"number must be an int in [0, 255], got {number!r}")
    table = torch.tensor([(number >> k) & 1 for k in range(8)])
    return LocalRule(table, K=1, d=2, boundary=boundary, name=f"rule{number}")


def random_rule(K: int, d: int = 2, *, seed: int = 0, boundary: str = "open", d_out: int | None = None) -> LocalRule:
    """A random K-local rule: a uniformly random truth table over the ``d**(2K+1)`` windows.

    Parameters
    ----------
    K : int
        Radius.
    d : int
        Input alphabet size.
    seed : int
        Seed of the truth table (the same seed gives the same rule everywhere).
    boundary : {"open", "periodic"}
        Boundary condition.
    d_out : int, optional
        Output alphabet size; defaults to ``d``.
    """
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, d if d_out is None else d_out, (d ** (2 * K + 1),), generator=g)
    return LocalRule(table, K=K, d=d, boundary=boundary, name=f"random(K={K},d={d},seed={seed})")


def from_truth_table(table, K: int, d: int = 2, boundary: str = "open", name: str = "custom") -> LocalRule:
    """A rule from a user-supplied truth table (see :class:`LocalRule` for the indexing)."""
    return LocalRule(torch.as_tensor(table), K=K, d=d, boundary=boundary, name=name)

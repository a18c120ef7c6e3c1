"""The uniform TN-attention layer as a ``torch.nn.Module``.

The paper's model; see the documentation's Science page, "The student".

Shapes: N batch, M length, d alphabet (input embedding size), D bond dimension, c outputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import reference
from . import init as _init
from ._backend import BACKENDS, resolve_backend
from ._ties import TiedContextsMixin
from .head import ACTIVATIONS

__all__ = ["TNAttention", "NonFiniteParameterError", "ACTIVATIONS"]


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class NonFiniteParameterError(FloatingPointError, ValueError):
    """A model parameter holds NaN or inf (training diverged).

    Subclasses both ``FloatingPointError`` and ``ValueError`` so either ``except`` catches it.
    """


class TNAttention(TiedContextsMixin, nn.Module):
    r"""One uniform TN-attention layer.

    Left contexts ``l_i`` (from ``u`` and ``A_left``) and right contexts ``r_i`` (from ``v`` and
    ``A_right``) are normalised at every step; the local map at site ``i`` is
    ``W_i[s, o] = sum_{a,b} l_i[a] C[s, a, b, o] r_i[b]`` and the output for the actual input is
    ``W_i[x_i, :]`` (one-hot input) or ``sum_s x[i, s] W_i[s, :]`` (real embeddings).

    In tensor-network terms (Žunkovič & Ilievski, arXiv:2210.15435, the TN-attention model): ``A_left`` and
    ``A_right`` are the site tensors of uniform matrix product states (MPS) with physical dimension
    d and bond dimension D; ``A[s]`` is the transfer matrix of symbol s; the contexts ``l_i`` and
    ``r_i`` are the normalised left and right environments of site i (the boundary vector
    contracted with the transfer matrices of the preceding or following symbols), and ``C``
    contracts them into the site's local map.

    Parameters
    ----------
    D : int
        Bond dimension.
    d : int
        Alphabet size (integer inputs) or embedding size (real inputs).
    c : int
        Outputs per site.
    shared : bool
        True (the paper's model): one context tensor serves both sides and ``A_right`` is the very
        same Parameter as ``A_left`` (listed once by ``parameters()``, also after
        ``load_state_dict(..., assign=True)``; a state dict with different ``A_left`` and
        ``A_right`` raises ``ValueError``). False: separate tensors.
    boundary : {"e1", "eig", "random"}
        Boundary vectors ``u`` (left) and ``v`` (right). ``"e1"``: the first basis vector for
        both (the author's code). ``"eig"``: the dominant left eigenvector of ``A_left[0]`` for
        ``u`` and the dominant right eigenvector of ``A_right[0]`` for ``v`` (the paper's
        fixed-attention runs; see :func:`tnattn.models.init.top_eigenvector` for complex
        eigenvectors), computed from the initial A and *not* recomputed when A trains (call
        :meth:`reset_boundary` for that). ``"random"``: independent uniformly random unit vectors.
    train_boundary : bool
        Whether ``u`` and ``v`` train (only while the contexts train, see :meth:`set_trainable`).
    init : {"normal", "orthogonal", "identity"}
        Scheme for the context tensors (see :mod:`tnattn.models.init`); ``C`` is always
        N(0, init_std^2).
    init_std : float
        Scale of the random initialisation (paper default 1).
    normalize_map : bool
        Divide each local map ``W_i`` (a d x c matrix) by its Frobenius norm and multiply it by the
        trainable scalar ``scale`` (the author's code). An exactly zero map stays zero. When
        False, ``scale`` is None.
    scale_init : float
        Initial value of ``scale``.
    activation : {"sigmoid", "none"}
        Applied by :meth:`forward` to the logits.
    train_contexts : bool
        False freezes ``A_left``, ``A_right``, ``u`` and ``v`` (Scenario B: only C learns).
    train_classifier : bool
        False freezes ``C`` and ``scale``.
    backend : {"ops", "reference", "vectorized"}
        Implementation of the contexts and local maps (see :mod:`tnattn.models._backend`): the
        native ops, or the plain-PyTorch reference loop or its log-depth variant.
    generator : torch.Generator, optional
        Source of the random initial values, drawn in this order: ``A_left``, ``A_right`` (when
        not shared), ``C``, then ``u`` and ``v`` (boundary "random" only).
    dtype : torch.dtype
        Floating dtype of the parameters.
    device : torch.device or str, optional

    Attributes
    ----------
    A_left, A_right : Parameter, shape (d, D, D)
    C : Parameter, shape (d, D, D, c)
    u, v : Parameter, shape (D,)
    scale : Parameter, shape () or None
    """

    def __init__(
        self,
        D: int,
        d: int = 2,
        c: int = 1,
        *,
        shared: bool = True,
        boundary: str = "e1",
        train_boundary: bool = False,
        init: str = "normal",
        init_std: float = 1.0,
        normalize_map: bool = True,
        scale_init: float = 1.0,
        activation: str = "sigmoid",
        train_contexts: bool = True,
        train_classifier: bool = True,
        backend: str = "ops",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        super().__init__()
        for name, val, lo in (("D", D, 1), ("d", d, 1), ("c", c, 1)):
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
        if boundary not in _init.BOUNDARIES:
            raise ValueError(f"boundary must be one of {_init.BOUNDARIES}, got {boundary!r}")
        if init not in _init.INITS:
            raise ValueError(f"init must be one of {_init.INITS}, got {init!r}")
        if not (isinstance(init_std, (int, float)) and init_std > 0 and init_std < float("inf")):
            raise ValueError(f"init_std must be a finite number > 0, got {init_std!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

        self.D, self.d, self.c, self.shared = D, d, c, bool(shared)
        self.boundary, self.init, self.init_std = boundary, init, float(init_std)
        self.normalize_map, self.activation, self.backend = bool(normalize_map), activation, backend

        def param(t: Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(dtype=dtype, device=device))

        self.A_left = param(_init.context_tensor(d, D, init, init_std, generator))
        # Registering the same Parameter twice ties the weights: parameters() yields it once,
        # state_dict() carries both names, and .to()/load_state_dict keep them one tensor.
        self.A_right = self.A_left if self.shared else param(_init.context_tensor(d, D, init, init_std, generator))
        self.C = param(_init.classifier_tensor(d, D, c, init_std, generator))
        u, v = self._boundary_vectors(generator)
        self.u, self.v = param(u), param(v)
        if self.normalize_map:
            self.scale = param(torch.tensor(float(scale_init), dtype=torch.float64))
        else:
            self.register_parameter("scale", None)

        self._finite_key: tuple = ()  # (id, version) of the parameters last found finite
        self._train_contexts = bool(train_contexts)
        self._train_classifier = bool(train_classifier)
        self._train_boundary = bool(train_boundary)
        self._apply_trainable()

    # ------------------------------------------------------------------------------------------
    # Boundaries and trainability
    # ------------------------------------------------------------------------------------------

    def _boundary_vectors(self, generator) -> tuple[Tensor, Tensor]:
        if self.boundary == "e1":
            e = torch.zeros(self.D, dtype=torch.float64)
            e[0] = 1.0
            return e, e.clone()
        if self.boundary == "eig":
            return (
                _init.top_eigenvector(self.A_left[0], left=True),
                _init.top_eigenvector(self.A_right[0], left=False),
            )
        return _init.random_unit(self.D, generator), _init.random_unit(self.D, generator)

    @torch.no_grad()
    def reset_boundary(self, generator: torch.Generator | None = None) -> None:
        """Recompute ``u`` and ``v`` by the boundary rule from the current parameters.

        For ``"eig"`` this follows the trained A; ``"random"`` draws new vectors from ``generator``.
        """
        if self.boundary not in _init.BOUNDARIES:
            raise ValueError(f"boundary {self.boundary!r} cannot be recomputed")
        u, v = self._boundary_vectors(generator)
        self.u.copy_(u)
        self.v.copy_(v)

    def _apply_trainable(self) -> None:
        self.A_left.requires_grad_(self._train_contexts)
        self.A_right.requires_grad_(self._train_contexts)
        train_uv = self._train_contexts and self._train_boundary
        self.u.requires_grad_(train_uv)
        self.v.requires_grad_(train_uv)
        self.C.requires_grad_(self._train_classifier)
        if self.scale is not None:
            self.scale.requires_grad_(self._train_classifier)

    def set_trainable(
        self, *, contexts: bool | None = None, classifier: bool | None = None, boundary: bool | None = None
    ) -> "TNAttention":
        """Switch which tensors train (``requires_grad``); None leaves a flag unchanged.

        Parameters
        ----------
        contexts : bool, optional
            ``A_left``/``A_right``; False also freezes ``u`` and ``v`` (Scenario B is
            ``set_trainable(contexts=False)``).
        classifier : bool, optional
            ``C`` and ``scale``.
        boundary : bool, optional
            ``u`` and ``v``; they train only when both this flag and ``contexts`` are True.

        Returns
        -------
        TNAttention
            ``self``.

        Notes
        -----
        A frozen tensor receives no gradient, so optimisers skip it (``grad is None``) and it stays
        bit-identical, also under weight decay or an L1 penalty added to the loss.
        """
        if contexts is not None:
            self._train_contexts = bool(contexts)
        if classifier is not None:
            self._train_classifier = bool(classifier)
        if boundary is not None:
            self._train_boundary = bool(boundary)
        self._apply_trainable()
        return self

    @property
    def train_contexts(self) -> bool:
        return self._train_contexts

    @property
    def train_classifier(self) -> bool:
        return self._train_classifier

    @property
    def train_boundary(self) -> bool:
        return self._train_boundary

    # ------------------------------------------------------------------------------------------
    # Input checks
    # ------------------------------------------------------------------------------------------

    def _prepare(self, x) -> Tensor:
        """Validate ``x``; return symbols (int64 unless uint8/int32) or real embeddings in our dtype.

        Only shapes, dtypes and devices are checked here (no host synchronisation, traceable by
        ``torch.compile(fullgraph=True)`` and ``torch.export``): symbols outside [0, d) are found by
        the op itself (the native kernels count them; the reference checks them). Data checks that
        need a synchronisation run in eager mode only, and only when they can have changed: the
        parameters' finiteness is re-checked when a parameter was replaced or modified in place
        (its version counter moved: every optimiser step and ``load_state_dict``), and real
        embeddings are checked for NaN/inf at every call.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        ref = self.A_left
        if x.device != ref.device:
            raise ValueError(f"x is on {x.device} but the model is on {ref.device}")
        if x.layout != torch.strided:
            raise TypeError(f"x must be a dense (strided) tensor, got layout {x.layout}")
        if x.dtype in _INT_DTYPES:
            if x.dim() != 2:
                raise ValueError(f"x of integer symbols must have shape (N, M), got {tuple(x.shape)}")
            if x.dtype != torch.int64:
                x = x.long()  # gathers and one_hot index with int64
        elif x.dtype.is_floating_point:
            if x.dim() != 3 or x.shape[2] != self.d:
                raise ValueError(
                    f"x of real embeddings must have shape (N, M, d={self.d}), got {tuple(x.shape)}"
                    " (integer symbols need an integer dtype)"
                )
            x = x.to(ref.dtype)
        else:
            raise TypeError(f"x must hold integer symbols (int64/int32/uint8...) or real embeddings, got {x.dtype}")
        if x.shape[1] < 1:
            raise ValueError(f"x must have length M >= 1, got shape {tuple(x.shape)}")
        if not (
            torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch._C._are_functorch_transforms_active()
        ):
            self._check_data(x)
        return x

    def _check_data(self, x: Tensor) -> None:
        """Eager data checks: parameter finiteness (when a parameter changed) and finite embeddings."""
        params = [p for p in self._parameters.values() if p is not None]
        key = tuple((id(p), p._version) for p in params)
        if key != getattr(self, "_finite_key", None):
            # One reduction over all parameters (max |entry| is NaN or inf exactly when some entry
            # is): this runs after every optimiser step, where per-parameter isfinite().all() calls
            # cost several times more.
            with torch.no_grad():
                worst = float(torch.cat([p.reshape(-1) for p in params]).abs().amax())
            if not math.isfinite(worst):
                for name, p in self.named_parameters():
                    if not bool(torch.isfinite(p).all()):
                        raise NonFiniteParameterError(f"parameter {name} holds NaN or inf (training diverged?)")
            self._finite_key = key
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("x holds NaN or inf")

    # ------------------------------------------------------------------------------------------
    # Forward pieces
    # ------------------------------------------------------------------------------------------

    @property
    def ops(self):
        """The backend namespace in use (``.name``, ``.contexts``, ``.tn_attention``)."""
        return resolve_backend(self.backend)

    def _ops_for(self, x: Tensor):
        # The native ops reject an empty batch; the reference handles it, and nothing is computed.
        return self.ops if x.shape[0] else resolve_backend("reference")

    def _raw_maps(self, x: Tensor) -> Tensor:
        return self._ops_for(x).tn_attention(x, self.A_left, self.A_right, self.C, self.u, self.v)

    def _normalise(self, W: Tensor) -> Tensor:
        if not self.normalize_map:
            return W
        N, M, d, c = W.shape
        return reference.normalize(W.reshape(N, M, d * c)).reshape(N, M, d, c) * self.scale

    @staticmethod
    def _select(W: Tensor, x: Tensor) -> Tensor:
        if x.is_floating_point():
            return torch.einsum("nis,niso->nio", x, W)
        N, M, _, c = W.shape
        return W.gather(2, x.view(N, M, 1, 1).expand(N, M, 1, c)).squeeze(2)

    def local_maps(self, x: Tensor) -> Tensor:
        """Local maps ``W_i`` (after normalisation and ``scale`` when ``normalize_map``).

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols in [0, d) or (N, M, d) real embeddings

        Returns
        -------
        Tensor, shape (N, M, d, c)
        """
        x = self._prepare(x)
        return self._normalise(self._raw_maps(x))

    def logits(self, x: Tensor) -> Tensor:
        """Outputs before the activation: ``W_i[x_i, :]`` or ``sum_s x[n, i, s] W_i[s, :]``.

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols or (N, M, d) real embeddings

        Returns
        -------
        Tensor, shape (N, M, c)
        """
        x = self._prepare(x)
        return self._select(self._normalise(self._raw_maps(x)), x)

    def forward(self, x: Tensor) -> Tensor:
        """``activation(logits(x))``; shape (N, M, c)."""
        z = self.logits(x)
        return torch.sigmoid(z) if self.activation == "sigmoid" else z

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted symbols, shape (N, M), int64.

        ``c == 1``: ``logits > 0`` (sigmoid output above 1/2; with ``activation="none"`` this
        assumes targets coded as -1/+1 around the threshold 0). ``c > 1``: argmax over the outputs.
        """
        z = self.logits(x)
        if self.c == 1:
            return (z[..., 0] > 0).long()
        return z.argmax(dim=-1)

    def contexts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Left and right contexts.

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols or (N, M, d) real embeddings

        Returns
        -------
        L, R : Tensor, shape (N, M, D) each
            Unit vectors (or exactly zero, see :func:`tnattn.reference.normalize`); ``L[:, i]``
            depends on ``x[:, :i]``, ``R[:, i]`` on ``x[:, i+1:]``.
        """
        return self._contexts(self._prepare(x))

    def _contexts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ops = self._ops_for(x)
        return ops.contexts(self.A_left, x, self.u), ops.contexts(self.A_right, x, self.v, reverse=True)

    def features(self, x: Tensor) -> Tensor:
        """Feature vectors ``f_i = l_i (x) phi(x_i) (x) r_i`` (documentation: Science, "The student").

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols or (N, M, d) real embeddings
            ``phi`` is the one-hot embedding for symbols and the identity for embeddings.

        Returns
        -------
        Tensor, shape (N, M, D*d*D)
            Flattened in (a, s, b) order: index ``(a*d + s)*D + b`` holds ``l_i[a] phi_s r_i[b]``.
            ``features(x) @ classifier_matrix()`` equals the raw (unnormalised, unscaled) outputs
            ``W_i[x_i, :]``.
        """
        x = self._prepare(x)
        L, R = self._contexts(x)
        phi = x if x.is_floating_point() else nn.functional.one_hot(x, self.d).to(L.dtype)
        f = torch.einsum("nia,nis,nib->niasb", L, phi, R)
        return f.reshape(*f.shape[:2], self.D * self.d * self.D)

    def classifier_matrix(self) -> Tensor:
        """``C`` laid out to match :meth:`features`: shape (D*d*D, c), rows in (a, s, b) order."""
        return self.C.permute(1, 0, 2, 3).reshape(-1, self.c)

    def extra_repr(self) -> str:
        frozen = [n for n, p in self.named_parameters() if not p.requires_grad]
        return (
            f"D={self.D}, d={self.d}, c={self.c}, shared={self.shared}, boundary={self.boundary!r}, "
            f"init={self.init!r}, init_std={self.init_std:g}, normalize_map={self.normalize_map}, "
            f"activation={self.activation!r}, backend={self.backend!r}, frozen={frozen}"
        )

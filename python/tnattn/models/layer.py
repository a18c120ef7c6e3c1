"""The uniform TN-attention layer as a ``torch.nn.Module``, for one member or E members at once.

The paper's model; see the documentation's Science page, "The student". One class serves a single
model and an ensemble of E independent members (``seeds=[...]``): the forward pass always runs on
parameters stacked over a leading member dimension E (:mod:`tnattn.models.functional`, one kernel
call for all members); a single model is E = 1 and stores its parameters without that dimension.

Shapes: E members, N batch, M length, d alphabet (input embedding size), D bond dimension, c outputs.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from . import functional
from . import init as _init
from ._backend import BACKENDS, resolve_backend
from ._ties import TiedContextsMixin
from .functional import Params
from .head import ACTIVATIONS

__all__ = ["TNAttention", "NonFiniteParameterError", "ACTIVATIONS", "Params"]


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


#: Settings that must agree between stacked members (attributes of TNAttention).
_SETTINGS = ("D", "d", "c", "shared", "boundary", "init", "init_std", "normalize_map", "activation")


class NonFiniteParameterError(FloatingPointError, ValueError):
    """A model parameter holds NaN or inf (training diverged).

    Subclasses both ``FloatingPointError`` and ``ValueError`` so either ``except`` catches it.
    """


class TNAttention(TiedContextsMixin, nn.Module):
    r"""One uniform TN-attention layer, or E independent members of it evaluated together.

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
    seeds : sequence of int, optional
        E = ``len(seeds)`` members with parameters stacked over a leading member dimension; member
        ``e`` is initialised exactly as ``TNAttention(..., generator=torch.Generator().manual_seed(
        seeds[e]))`` (it is built that way and stacked). Not together with ``generator``. Without
        ``seeds`` the model is one member (E = 1) whose parameters have no member dimension.
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
    A_left, A_right : Parameter, shape ([E,] d, D, D)
    C : Parameter, shape ([E,] d, D, D, c)
    u, v : Parameter, shape ([E,] D)
    scale : Parameter, shape ([E]) or None
        The leading E only when built with ``seeds`` (or :meth:`from_members`); :attr:`E` counts
        the members (1 for a single model).
    has_member_dim : bool
        Whether the parameters carry the leading member dimension.

    Notes
    -----
    Inputs ``x`` are shared by every member ((N, M) symbols, (N, M, d) embeddings) or, for a model
    with a member dimension, one batch per member ((E', N, M) or (E', N, M, d)). The outputs of a
    model with a member dimension lead with E' (the members asked for, see ``members=``); those
    of a single model do not.
    """

    def __init__(
        self,
        D: int,
        d: int = 2,
        c: int = 1,
        *,
        seeds: Optional[Sequence[int]] = None,
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
        if seeds is not None:
            if generator is not None:
                raise TypeError("TNAttention takes seeds (one member per seed) or a generator, not both")
            kwargs = dict(shared=shared, boundary=boundary, train_boundary=train_boundary, init=init, init_std=init_std,
                          normalize_map=normalize_map, scale_init=scale_init, activation=activation,
                          train_contexts=train_contexts, train_classifier=train_classifier, backend=backend,
                          dtype=dtype, device=device)  # fmt: skip
            self._stack(
                [TNAttention(D, d, c, generator=torch.Generator().manual_seed(s), **kwargs) for s in _check_seeds(seeds)]
            )
            return
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
        self.has_member_dim = False
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

    @classmethod
    def from_members(cls, members: Sequence["TNAttention"]) -> "TNAttention":
        """Stack compatible single models into one model with a member dimension (copies their
        parameters; the backend is that of the first member).

        Raises
        ------
        TypeError
            A member is not a single-member :class:`TNAttention`.
        ValueError
            If the list is empty or the members differ in a setting (D, d, c, shared, boundary,
            init, normalisation, activation, dtype, device or which tensors train).
        """
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj._stack(list(members))
        return obj

    def _stack(self, members: list) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for k, m in enumerate(members):
            if not isinstance(m, TNAttention) or m.has_member_dim:
                raise TypeError(f"members must be single TNAttention models, got {type(m).__name__} at {k}")
        first = members[0]
        flags = lambda m: (m.train_contexts, m.train_classifier, m.train_boundary, m.A_left.dtype, m.A_left.device)  # noqa: E731
        for k, m in enumerate(members):
            for s in _SETTINGS:
                if getattr(m, s) != getattr(first, s):
                    raise ValueError(f"member {k} has {s}={getattr(m, s)!r} but member 0 has {getattr(first, s)!r}")
            if flags(m) != flags(first):
                raise ValueError(f"member {k} differs from member 0 in dtype, device or trainable tensors")
        for s in (*_SETTINGS, "backend"):
            setattr(self, s, getattr(first, s))
        self.has_member_dim = True
        self._finite_key = ()
        self._train_contexts, self._train_classifier = first.train_contexts, first.train_classifier
        self._train_boundary = first.train_boundary

        def stack(name):
            return nn.Parameter(torch.stack([getattr(m, name).detach() for m in members]).clone())

        self.A_left = stack("A_left")
        self.A_right = self.A_left if self.shared else stack("A_right")
        self.C = stack("C")
        self.u, self.v = stack("u"), stack("v")
        if self.normalize_map:
            self.scale = stack("scale")
        else:
            self.register_parameter("scale", None)
        self._apply_trainable()

    @property
    def E(self) -> int:
        """Number of members (1 for a single model)."""
        return self.A_left.shape[0] if self.has_member_dim else 1

    @property
    def dtype(self) -> torch.dtype:
        return self.A_left.dtype

    def stacked(self, members: Optional[Sequence[int] | Tensor] = None) -> Params:
        """The parameters stacked over the member dimension, optionally only the rows ``members``.

        A single model's parameters appear as views with E = 1 (gradients flow to the
        parameters). Pass the result to the functions of :mod:`tnattn.models.functional`.

        Parameters
        ----------
        members : sequence of int or Tensor, optional
            Member indices in [0, E), in the order wanted; default all.

        Returns
        -------
        Params
        """
        if self.has_member_dim:
            P = Params(self.A_left, self.A_right, self.C, self.u, self.v, self.scale)
        else:
            AL = self.A_left.unsqueeze(0)
            AR = AL if self.A_right is self.A_left else self.A_right.unsqueeze(0)
            scale = None if self.scale is None else self.scale.unsqueeze(0)
            P = Params(AL, AR, self.C.unsqueeze(0), self.u.unsqueeze(0), self.v.unsqueeze(0), scale)
        return P if members is None else P.select(self._member_index(members))

    def _member_index(self, members) -> Tensor:
        idx = torch.as_tensor(members, dtype=torch.long, device=self.A_left.device).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("members must name at least one member")
        if int(idx.min()) < 0 or int(idx.max()) >= self.E:
            raise ValueError(f"members must lie in [0, {self.E}), got {idx.tolist()}")
        return idx

    @torch.no_grad()
    def member(self, e: int, *, backend: Optional[str] = None) -> "TNAttention":
        """Member ``e`` as a stand-alone single :class:`TNAttention` (a copy).

        Parameters
        ----------
        e : int
            In [0, E).
        backend : str, optional
            The copy's backend; default this model's.
        """
        if not 0 <= int(e) < self.E:
            raise ValueError(f"e must lie in [0, {self.E}), got {e}")
        # A throwaway generator: building the module must not consume the global RNG.
        m = TNAttention(
            self.D, self.d, self.c, shared=self.shared, boundary="e1", init="normal", init_std=self.init_std,
            normalize_map=self.normalize_map, activation=self.activation, backend=backend or self.backend,
            generator=torch.Generator().manual_seed(0), dtype=self.dtype, device=self.A_left.device,
        )  # fmt: skip
        m.boundary, m.init = self.boundary, self.init
        for name in ("A_left", "A_right", "C", "u", "v", "scale"):
            p = getattr(m, name)
            if p is not None:
                src = getattr(self, name)
                p.copy_(src[e] if self.has_member_dim else src)
        m.set_trainable(contexts=self._train_contexts, classifier=self._train_classifier, boundary=self._train_boundary)
        return m

    # ------------------------------------------------------------------------------------------
    # Boundaries and trainability
    # ------------------------------------------------------------------------------------------

    def _boundary_vectors(self, generator) -> tuple[Tensor, Tensor]:
        if self.has_member_dim:  # member by member, drawing from one generator in member order
            pairs = [self._member_boundary(self.A_left[e], self.A_right[e], generator) for e in range(self.E)]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return self._member_boundary(self.A_left, self.A_right, generator)

    def _member_boundary(self, A_left: Tensor, A_right: Tensor, generator) -> tuple[Tensor, Tensor]:
        if self.boundary == "e1":
            e = torch.zeros(self.D, dtype=torch.float64)
            e[0] = 1.0
            return e, e.clone()
        if self.boundary == "eig":
            return _init.top_eigenvector(A_left[0], left=True), _init.top_eigenvector(A_right[0], left=False)
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

    def _prepare(self, x, E: int = 1) -> Tensor:
        """Validate ``x``; return symbols (int64 unless uint8/int32) or real embeddings in our dtype.

        ``E`` is the number of members evaluated (a per-member ``x`` must lead with it). Only
        shapes, dtypes and devices are checked here (no host synchronisation, traceable by
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
        # a model with a member dimension also takes one batch per member (leading E)
        per_member = f" or (E={E}, N, M)" if self.has_member_dim else ""
        if x.dtype in _INT_DTYPES:
            if not (x.dim() == 2 or (per_member and x.dim() == 3 and x.shape[0] == E)):
                raise ValueError(f"x of integer symbols must have shape (N, M){per_member}, got {tuple(x.shape)}")
            if x.dtype != torch.int64:
                x = x.long()  # gathers and one_hot index with int64
        elif x.dtype.is_floating_point:
            ok = x.dim() == 3 or (per_member and x.dim() == 4 and x.shape[0] == E)
            if not ok or x.shape[-1] != self.d:
                emb = f"(N, M, d={self.d})" + (f" or (E={E}, N, M, d={self.d})" if per_member else "")
                raise ValueError(
                    f"x of real embeddings must have shape {emb}, got {tuple(x.shape)}"
                    " (integer symbols need an integer dtype)"
                )
            x = x.to(ref.dtype)
        else:
            raise TypeError(f"x must hold integer symbols (int64/int32/uint8...) or real embeddings, got {x.dtype}")
        if x.shape[-2 if x.is_floating_point() else -1] < 1:
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
    # Forward pass: the functions of tnattn.models.functional on the stacked parameters
    # ------------------------------------------------------------------------------------------

    @property
    def ops(self):
        """The backend namespace in use (``.name``, ``.contexts``, ``.tn_attention``, over E members)."""
        return resolve_backend(self.backend)

    def _inputs(self, x, members) -> tuple[Params, Tensor]:
        if members is not None and not self.has_member_dim:
            raise ValueError("members= needs a model with a member dimension (built with seeds or from_members)")
        # all members: the parameters as they are (a single model's without E: the functions
        # treat them as E = 1 and return outputs without E)
        P = Params(self.A_left, self.A_right, self.C, self.u, self.v, self.scale) if members is None else self.stacked(members)
        return P, self._prepare(x, P.E)

    def local_maps(self, x: Tensor, members=None) -> Tensor:
        """Local maps ``W_i`` (after normalisation and ``scale`` when ``normalize_map``).

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols in [0, d) or (N, M, d) real embeddings
            (or (E', N, M) / (E', N, M, d), one batch per member)
        members : sequence of int or Tensor, optional
            Evaluate only these members (E' of them, in this order); default all (E' = E). Only
            for a model with a member dimension.

        Returns
        -------
        Tensor, shape ([E',] N, M, d, c)
        """
        P, x = self._inputs(x, members)
        return functional.maps(P, x, normalize_map=self.normalize_map, backend=self.backend)

    def logits(self, x: Tensor, members=None) -> Tensor:
        """Outputs before the activation: ``W_i[x_i, :]`` or ``sum_s x[n, i, s] W_i[s, :]``, shape
        ([E',] N, M, c); ``x`` and ``members`` as in :meth:`local_maps`."""
        P, x = self._inputs(x, members)
        return functional.logits(P, x, normalize_map=self.normalize_map, backend=self.backend)

    def forward(self, x: Tensor, members=None) -> Tensor:
        """``activation(logits(x))``; shape ([E',] N, M, c)."""
        z = self.logits(x, members)
        return torch.sigmoid(z) if self.activation == "sigmoid" else z

    @torch.no_grad()
    def predict(self, x: Tensor, members=None) -> Tensor:
        """Predicted symbols, shape ([E',] N, M), int64 (:func:`tnattn.models.functional.predict`).

        ``c == 1``: ``logits > 0`` (sigmoid output above 1/2; with ``activation="none"`` this
        assumes targets coded as -1/+1 around the threshold 0). ``c > 1``: argmax over the outputs.
        """
        P, x = self._inputs(x, members)
        return functional.predict(P, x, normalize_map=self.normalize_map, backend=self.backend)

    def contexts(self, x: Tensor, members=None) -> tuple[Tensor, Tensor]:
        """Left and right contexts.

        Parameters
        ----------
        x, members
            As in :meth:`local_maps`.

        Returns
        -------
        L, R : Tensor, shape ([E',] N, M, D) each
            Unit vectors (or exactly zero, see :func:`tnattn.reference.normalize`); ``L[..., i, :]``
            depends on the symbols before site i, ``R[..., i, :]`` on those after it.
        """
        P, x = self._inputs(x, members)
        return functional.contexts(P, x, backend=self.backend)

    def features(self, x: Tensor, members=None) -> Tensor:
        """Feature vectors ``f_i = l_i (x) phi(x_i) (x) r_i`` (documentation: Science, "The student").

        Parameters
        ----------
        x : Tensor, shape (N, M) integer symbols or (N, M, d) real embeddings
            (or per member, see :meth:`local_maps`). ``phi`` is the one-hot embedding for symbols
            and the identity for embeddings.
        members : sequence of int or Tensor, optional
            As in :meth:`local_maps`.

        Returns
        -------
        Tensor, shape ([E',] N, M, D*d*D)
            Flattened in (a, s, b) order: index ``(a*d + s)*D + b`` holds ``l_i[a] phi_s r_i[b]``.
            ``features(x) @ classifier_matrix()`` equals the raw (unnormalised, unscaled) outputs
            ``W_i[x_i, :]``.
        """
        P, x = self._inputs(x, members)
        L, R = functional.contexts(P, x, backend=self.backend)
        phi = x if x.is_floating_point() else nn.functional.one_hot(x, self.d).to(L.dtype)
        f = torch.einsum("...ia,...is,...ib->...iasb", L, phi.expand(*L.shape[:-1], self.d), R)
        return f.reshape(*f.shape[:-3], self.D * self.d * self.D)

    def classifier_matrix(self) -> Tensor:
        """``C`` laid out to match :meth:`features`: shape ([E,] D*d*D, c), rows in (a, s, b) order."""
        return self.C.transpose(-4, -3).reshape(*self.C.shape[:-4], -1, self.c)

    def extra_repr(self) -> str:
        frozen = [n for n, p in self.named_parameters() if not p.requires_grad]
        members = f"E={self.E}, " if self.has_member_dim else ""
        return (
            f"{members}D={self.D}, d={self.d}, c={self.c}, shared={self.shared}, boundary={self.boundary!r}, "
            f"init={self.init!r}, init_std={self.init_std:g}, normalize_map={self.normalize_map}, "
            f"activation={self.activation!r}, backend={self.backend!r}, frozen={frozen}"
        )


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
        out.append(int(s))
    if not out:
        raise ValueError("seeds must name at least one member")
    return out

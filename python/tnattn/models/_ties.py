"""Tied context tensors through ``load_state_dict`` (the shared-tensor model of the paper).

A shared model registers one Parameter under two names, ``A_left`` and ``A_right``; its state dict
carries the tensor under both. ``nn.Module.load_state_dict(..., assign=True)`` would replace each
name by its own Parameter, leaving two (so an optimiser would update the shared tensor twice per
step). :class:`TiedContextsMixin` keeps the tie in every load mode and refuses state dicts that do
not fit the model's sharing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TiedContextsMixin"]


class TiedContextsMixin:
    """For ``nn.Module`` subclasses with a ``shared`` flag and Parameters ``A_left``/``A_right``.

    Loading into a shared model: ``A_left`` and ``A_right`` of the state dict must be equal (or
    only one of them given), else ``ValueError`` (that state dict belongs to ``shared=False``);
    afterwards ``A_right is A_left`` also with ``assign=True``. A separate-tensor model accepts any
    state dict that fits its shapes, including one of a shared model (whose tensor it copies, so
    its two tensors never share storage).
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        kl, kr = prefix + "A_left", prefix + "A_right"
        if self.shared and (kl in state_dict or kr in state_dict):
            left, right = state_dict.get(kl), state_dict.get(kr)
            if left is not None and right is not None and left is not right:
                same = isinstance(left, Tensor) and isinstance(right, Tensor) and left.shape == right.shape
                if not (same and torch.equal(left, right)):
                    raise ValueError(
                        f"state dict holds different {kl} and {kr}, but this {type(self).__name__} has "
                        "shared=True (one context tensor for both sides); load it into a model built "
                        "with shared=False"
                    )
            one = left if left is not None else right
            state_dict = dict(state_dict)  # the caller's dict stays as it was
            state_dict[kl] = state_dict[kr] = one
        elif not self.shared and isinstance(state_dict.get(kl), Tensor) and isinstance(state_dict.get(kr), Tensor):
            left, right = state_dict[kl], state_dict[kr]
            if left.untyped_storage().data_ptr() == right.untyped_storage().data_ptr():
                # a shared model's state dict: with assign=True both names would get the one
                # storage, and the two "separate" tensors would move together
                state_dict = dict(state_dict)
                state_dict[kr] = right.clone()
        nn.Module._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.shared:
            # assign=True gave each name its own Parameter: tie them again (A_right -> A_left)
            self._parameters["A_right"] = self._parameters["A_left"]

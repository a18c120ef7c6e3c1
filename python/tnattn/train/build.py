"""Build the pieces of a run from a :class:`TrainConfig`: teacher, data, model, seeds, device.

Seeding: one ``config.seed`` is split by :class:`numpy.random.SeedSequence` into independent seeds
for the model initialisation and for the data stream (shuffles, crops, random training sequences),
so neighbouring seeds do not share streams. The test sets use ``config.test_seed`` alone, so every
run of a study is scored on the same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tnattn.data import LabelledSet, MiniBatches, all_sequences, make_test_sets, random_sequences
from tnattn.errors import ConfigError
from tnattn.teachers import build_teacher
from tnattn.train.config import TrainConfig

__all__ = ["build_teacher", "build_model", "build_problem", "Problem", "split_seed", "resolve_device", "output_size"]


def split_seed(seed: int) -> tuple[int, int]:
    """Independent (model, data) seeds derived from one run seed."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    model_seed, data_seed = np.random.SeedSequence(seed).generate_state(2)
    return int(model_seed), int(data_seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu.

    Raises
    ------
    ConfigError
        ``"cuda"`` on a machine where torch sees no CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested, but torch sees no CUDA device here; use device 'cpu' or 'auto'")
    return torch.device(device)


def output_size(teacher) -> int:
    """Model outputs c: 1 for binary outputs (threshold at 0), else one logit per symbol."""
    return 1 if teacher.d_out == 2 else int(teacher.d_out)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(config: TrainConfig, teacher, *, generator: torch.Generator, device=None):
    """The TN-attention student of ``config`` for ``teacher`` (random init from ``generator``)."""
    from tnattn.models import TNAttention, exact_local_rule

    dtype = _DTYPES[config.dtype]
    c = output_size(teacher)
    common = dict(
        normalize_map=config.normalize_map,
        activation=config.activation,
        backend=config.backend,
        init_std=config.init_std,
        dtype=dtype,
        device=device,
        generator=generator,
    )
    if config.exact:
        # Hand-built neighbourhood contexts for the teacher's window; C stays random.
        model = exact_local_rule(teacher, shared=config.shared, D=config.D, **common)
        model.set_trainable(
            contexts=config.train_contexts, classifier=config.train_classifier, boundary=config.train_boundary
        )
        return model
    return TNAttention(
        config.D,
        d=teacher.d,
        c=c,
        shared=config.shared,
        boundary=config.boundary_vectors,
        train_boundary=config.train_boundary,
        init=config.init,
        train_contexts=config.train_contexts,
        train_classifier=config.train_classifier,
        **common,
    )


@dataclass
class Problem:
    """Everything a run trains on and is scored against.

    Attributes
    ----------
    teacher : callable
        The rule, (N, M) -> (N, M).
    batches : MiniBatches
        Training mini-batches (its generator drives shuffles and crops).
    train_set : LabelledSet
        The uncropped training sequences (training error is measured on them).
    test_sets : dict[int, LabelledSet]
        Test sets by length.
    """

    teacher: object
    batches: MiniBatches
    train_set: LabelledSet
    test_sets: dict


def build_problem(config: TrainConfig, *, generator: torch.Generator, teacher=None) -> Problem:
    """Teacher, training batches, training set and test sets of ``config``.

    ``generator`` is the data generator: it draws the random training sequences (if
    ``train_size > 0``) and then drives the mini-batch shuffles and crops.
    """
    teacher = build_teacher(config) if teacher is None else teacher
    d = teacher.d
    if config.train_size > 0:
        x = random_sequences(config.train_size, config.train_length, d, generator=generator)
    else:
        x = all_sequences(config.train_length, d)
    crop = (config.crop_min, config.crop_max) if config.crop_min > 0 else None
    batches = MiniBatches(x, teacher, batch_size=config.batch_size or None, crop=crop, generator=generator)
    train_set = LabelledSet(x, teacher(x))
    test_sets = make_test_sets(teacher, config.test_lengths, n=config.test_size, d=d, seed=config.test_seed)
    return Problem(teacher, batches, train_set, test_sets)

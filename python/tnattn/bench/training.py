"""Training throughput: member-token-steps per second, single model and ensemble.

A member-token-step is one token (site) of one member's mini-batch going through one optimiser
step (forward, backward, update). Single model: :meth:`tnattn.train.Trainer.from_model`; ensemble:
:class:`tnattn.train.Trainer` with E seeds (E members per kernel call). Both run their own ``fit`` for ``warmup + epochs`` epochs without stopping rules; the
rate of each epoch is taken from the trainer's own training-time and token counters (evaluation
is not included), and the median over the epochs after the warm-up is reported.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Optional, Sequence

import torch

__all__ = ["training_config", "single_throughput", "ensemble_throughput", "training_throughput", "ensemble_run"]


def training_config(setting: str = "author-example", **overrides):
    """The TrainConfig timed: a preset (default the author's example: rule 30 twice, D = 40,
    batch 128, crops 6-10 of all length-10 strings) with cheap evaluation and no stopping rule."""
    from tnattn.train.config import TrainConfig, preset

    base = TrainConfig() if setting == "default" else preset(setting)
    cheap = dict(test_lengths=(100,), test_size=16, eval_every=10**6, stop_after_grok=-1, patience=0,
                 progress=False, checkpoint_every=10**6, deff_probe=0)  # fmt: skip
    return dataclasses.replace(base, **{**cheap, **overrides})


def _median_rate(samples: list[tuple[float, float]], warmup: int) -> float:
    """samples: cumulative (seconds, tokens) after each epoch -> median per-epoch tokens/s."""
    rates = []
    prev_s, prev_n = 0.0, 0.0
    for k, (s, n) in enumerate(samples):
        if k >= warmup and s > prev_s:
            rates.append((n - prev_n) / (s - prev_s))
        prev_s, prev_n = s, n
    if not rates:
        raise RuntimeError("no timed epochs (increase epochs)")
    return statistics.median(rates)


def single_throughput(config, *, epochs: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    """Member-token-steps/s of one :class:`~tnattn.train.Trainer` run of ``config``."""
    from tnattn.train.build import build_model, build_problem, build_teacher, resolve_device, split_seed
    from tnattn.train.callbacks import Callback
    from tnattn.train.trainer import Trainer

    config = dataclasses.replace(config, seed=seed, max_epochs=warmup + epochs)
    device = resolve_device(config.device)
    model_seed, data_seed = split_seed(seed)
    teacher = build_teacher(config)
    problem = build_problem(config, generator=torch.Generator().manual_seed(data_seed), teacher=teacher)
    model = build_model(config, teacher, generator=torch.Generator().manual_seed(model_seed), device=device)
    samples: list[tuple[float, float]] = []

    class _Record(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            samples.append((trainer.train_seconds, trainer.train_sites))

    trainer = Trainer.from_model(model, problem.batches, config, device=device, callbacks=[_Record()],
                                 test_sets={m: s.to(device) for m, s in problem.test_sets.items()})  # fmt: skip
    trainer.fit()
    return {"kind": "single", "E": 1, "member_token_steps_per_s": _median_rate(samples, warmup), "epochs": epochs}


def ensemble_throughput(config, E: int, *, epochs: int = 5, warmup: int = 1) -> Optional[dict]:
    """Member-token-steps/s of a :class:`~tnattn.train.Trainer` with E members."""
    from tnattn.train.trainer import Trainer

    config = dataclasses.replace(config, max_epochs=warmup + epochs)
    samples: list[tuple[float, float]] = []
    trainer = Trainer(config, seeds=list(range(E)),
                      on_epoch=lambda t, epoch: samples.append((t.train_seconds, t.member_tokens)))  # fmt: skip
    trainer.fit()
    return {"kind": "ensemble", "E": E, "member_token_steps_per_s": _median_rate(samples, warmup), "epochs": epochs}


def training_throughput(
    setting: str = "author-example",
    Es: Sequence[int] = (8, 32),
    *,
    epochs: int = 5,
    warmup: int = 1,
    overrides: Optional[dict] = None,
) -> list[dict]:
    """Single-model and ensemble rows; ``x_single`` = rate / single-model rate."""
    config = training_config(setting, **(overrides or {}))
    rows = [single_throughput(config, epochs=epochs, warmup=warmup)]
    for E in Es:
        r = ensemble_throughput(config, int(E), epochs=epochs, warmup=warmup)
        if r is not None:
            rows.append(r)
    base = rows[0]["member_token_steps_per_s"]
    for r in rows:
        r["setting"] = setting
        r["D"] = config.D
        r["batch_size"] = config.batch_size
        r["x_single"] = r["member_token_steps_per_s"] / base
    return rows


def ensemble_run(config_dict: dict, E: int, epochs: int, *, first_seed: int = 0, threads: int = 1,
                 shared: bool = False) -> dict:  # fmt: skip
    """Train E members (seeds first_seed..) for ``epochs`` epochs; member-token-steps and seconds.

    Module-level and picklable, so that ``benchmarks/bench_training.py`` can run it in spawned
    processes (one slice of the members per process, as ``torchrun`` runs the experiment).

    Returns
    -------
    dict
        ``member_token_steps``, ``train_s`` (optimisation steps only) and ``wall_s`` (the whole fit).
    """
    import time

    from tnattn.train.config import TrainConfig
    from tnattn.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg = TrainConfig(**{**config_dict, "max_epochs": epochs})
    trainer = Trainer(cfg, list(range(first_seed, first_seed + E)), shared_data=shared,
                      kernel_threads=threads, elementwise_threads=1)  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit()
    return {"member_token_steps": trainer.member_tokens, "train_s": trainer.train_seconds,
            "wall_s": time.perf_counter() - t0}  # fmt: skip

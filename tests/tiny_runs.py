"""Shared tiny training settings of the trainer tests (tests/train/test_trainer.py, tests/ensemble/test_ensemble.py).

A rule-30 problem on all length-6 strings with short test sets: a dozen epochs run in well under a
second per member, and the default run groks in some seeds, so grokking times are exercised too.
"""

TINY_TRAIN = dict(
    D=4,
    train_length=6,
    crop_min=3,
    crop_max=6,
    batch_size=16,
    test_lengths=(30, 12),
    test_size=40,
    max_epochs=12,
    eval_every=3,
    deff_probe=24,
    progress=False,
    plots=False,
    stop_after_grok=-1,
    threads=1,
)

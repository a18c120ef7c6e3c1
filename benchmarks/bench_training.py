"""Training throughput in member-token-steps per second at the paper's setting.

Setting (Scenario A, SCIENCE.md section 3): rule 30, D = 10, Adam lr 0.005, MSE on a sigmoid, L1 1e-3,
batches of 128 of all 1024 length-10 strings cropped to random lengths 6-10. A *member-token-step*
is one site of one member's training batch going through one forward+backward+update; an epoch of
one member is 1024 x (mean crop length 8) = 8192 of them.

Implementations compared:

* ``ensemble``  -- :class:`tnattn.train.Trainer` with E seeds, E members per kernel call, each on its
                   own batches (equal to E separate runs);
* ``ensemble-shared`` -- the same with one batch stream shared by all members (``shared_data``);
* ``ensemble-Pproc`` -- the largest E split over P one-thread processes running at once (default
                   P = --threads), as ``torchrun --nproc-per-node P ... experiment scenario-a`` runs;
* ``single``    -- :meth:`tnattn.train.Trainer.from_model` (fused ops), one member after the other;
* ``loop``      -- a straightforward PyTorch training loop over a model whose contexts are a Python
                   loop over positions (:mod:`tnattn.reference`, autograd backward), as the
                   seed's code is written.

Two rates per row: ``train`` counts only the optimisation steps (data, forward, backward, update);
``wall`` also counts the per-epoch evaluation on the training set that every trainer does (the
protocol's test-set evaluations are switched off here: they depend on test-set size, not on the
training implementation). The full-protocol cost (1000 runs x 7000 epochs x 8192 member-token-steps)
is extrapolated from the fastest (wall rate) ensemble row with separate batches per member.

Usage::

    python benchmarks/bench_training.py --threads 2 --json results/bench_training.json
    python benchmarks/bench_training.py --quick

Importable: ``main(argv)`` runs the benchmark and returns 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

FULL_PROTOCOL_MEMBER_TOKEN_STEPS = 1000 * 7000 * 1024 * 8


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "unknown"


def base_config(quick: bool):
    from tnattn.train import TrainConfig

    return TrainConfig(
        rule=30, D=6 if quick else 10, train_length=10, crop_min=6, crop_max=10, batch_size=128, lr=0.005,
        loss="mse", activation="sigmoid", l1=1e-3, test_lengths=(20,), test_size=8, eval_every=10**6,
        eval_when_fit=False, deff_probe=0, stop_after_grok=-1, progress=False, plots=False,
    )  # fmt: skip


def bench_ensemble(cfg, E: int, epochs: int, threads: int, shared: bool, first_seed: int = 0) -> dict:
    from tnattn.bench.training import ensemble_run

    torch_threads = torch.get_num_threads()
    try:
        return ensemble_run(cfg.to_dict(), E, epochs, first_seed=first_seed, threads=threads, shared=shared)
    finally:
        torch.set_num_threads(torch_threads)


def bench_ensemble_processes(cfg, E: int, epochs: int, processes: int) -> dict:
    """E members split over ``processes`` independent processes of one thread each, run at once.

    This is how the Scenario A experiment uses a machine (``torchrun --nproc-per-node P``: each rank
    trains its slice of the members): the Python-side work of the trainer, which runs on one thread,
    is then spread over the cores too. Members are independent, so no communication is timed.
    Rates: tokens of all processes over the slowest process's train (or wall) seconds; process
    start-up (interpreter and torch import) is excluded, as it is paid once per experiment.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    bounds = [E * k // processes for k in range(processes + 1)]
    from tnattn.bench.training import ensemble_run

    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(ensemble_run, cfg.to_dict(), bounds[k + 1] - bounds[k], epochs,
                               first_seed=bounds[k], threads=1)
                   for k in range(processes)]  # fmt: skip
        parts = [f.result() for f in futures]
    return {
        "member_token_steps": sum(p["member_token_steps"] for p in parts),
        "train_s": max(p["train_s"] for p in parts),
        "wall_s": max(p["wall_s"] for p in parts),
    }


def bench_single(cfg, members: int, epochs: int) -> dict:
    from tnattn.train import Trainer, build_model, build_problem, build_teacher, split_seed

    cfg = cfg.__class__(**{**cfg.to_dict(), "max_epochs": epochs})
    teacher = build_teacher(cfg)
    tokens, train_s, wall = 0, 0.0, 0.0
    for seed in range(members):
        ms, ds = split_seed(seed)
        prob = build_problem(cfg, generator=torch.Generator().manual_seed(ds), teacher=teacher)
        model = build_model(cfg, teacher, generator=torch.Generator().manual_seed(ms))
        trainer = Trainer.from_model(model, prob.batches, cfg, train_set=prob.train_set, test_sets=prob.test_sets)
        t0 = time.perf_counter()
        trainer.fit()
        wall += time.perf_counter() - t0
        tokens += trainer.train_sites
        train_s += trainer.train_seconds
    return {"member_token_steps": tokens, "train_s": train_s, "wall_s": wall}


def bench_loop(cfg, steps: int) -> dict:
    """A plain training loop: reference (Python loop over positions) model, torch.optim.Adam."""
    from tnattn.data import MiniBatches, all_sequences
    from tnattn.models import TNAttention
    from tnattn.rules import elementary
    from tnattn.train import compute_loss, l1_penalty

    teacher = elementary(cfg.rule)
    x = all_sequences(cfg.train_length)
    batches = MiniBatches(x, teacher, cfg.batch_size, (cfg.crop_min, cfg.crop_max), torch.Generator().manual_seed(0))
    model = TNAttention(cfg.D, backend="reference", generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    tokens, done = 0, 0
    t0 = time.perf_counter()
    while done < steps:
        for batch in batches:
            loss = compute_loss(model.logits(batch.x), batch.y) + cfg.l1 * l1_penalty(params)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tokens += batch.y.numel()
            done += 1
            if done >= steps:
                break
    t = time.perf_counter() - t0
    return {"member_token_steps": tokens, "train_s": t, "wall_s": t}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (D = 6, few epochs), for smoke tests")
    p.add_argument("--threads", type=int, default=2, help="threads (torch for single/loop; the kernels for ensembles)")
    p.add_argument("--ensemble-sizes", default=None, help="comma-separated E values (default 64,256,1024)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per ensemble measurement (default 3)")
    p.add_argument("--single-members", type=int, default=None, help="members trained one at a time (default 4)")
    p.add_argument("--loop-steps", type=int, default=None, help="optimiser steps of the plain loop (default 16)")
    p.add_argument("--processes", type=int, default=None,
                   help="also time the largest E split over this many one-thread processes (default: --threads; 1 = skip)")  # fmt: skip
    p.add_argument("--json", dest="json_path", default=None, help="write the results to this JSON file (atomically)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.processes is not None and args.processes < 1:
        raise SystemExit("--processes must be >= 1")
    sizes = [int(s) for s in (args.ensemble_sizes or ("4,16" if args.quick else "64,256,1024")).split(",") if s]
    epochs = args.epochs or (1 if args.quick else 3)
    single_members = args.single_members or (1 if args.quick else 4)
    loop_steps = args.loop_steps or (2 if args.quick else 16)
    torch.set_num_threads(args.threads)
    from tnattn.bench.machine import machine_header

    cfg = base_config(args.quick)
    header = machine_header("cpu")
    header.update({
        "threads": args.threads,
        "setting": f"rule {cfg.rule}, D={cfg.D}, batch {cfg.batch_size}, crops {cfg.crop_min}-{cfg.crop_max} "
        f"of all length-{cfg.train_length} strings, Adam {cfg.lr}, MSE on sigmoid, L1 {cfg.l1}, float32",
        "load_average_start": load_average(),
        "command": " ".join([os.path.basename(sys.argv[0])] + (sys.argv[1:] if argv is None else list(argv))),
    })  # fmt: skip
    for k, v in header.items():
        print(f"# {k}: {v}")
    head = f"{'impl':>16} {'E':>5} {'epochs':>6} {'Mtok-steps':>10} {'train s':>8} {'wall s':>8} {'train M/s':>9} {'wall M/s':>9} {'x loop':>7} {'x single':>8}"
    print(head)
    print("-" * len(head))
    rows = []

    def record(impl, E, ep, r):
        row = {"impl": impl, "E": E, "epochs": ep, **r,
               "train_rate": r["member_token_steps"] / r["train_s"], "wall_rate": r["member_token_steps"] / r["wall_s"]}  # fmt: skip
        rows.append(row)
        loop = next((x for x in rows if x["impl"] == "loop"), None)
        single = next((x for x in rows if x["impl"] == "single"), None)
        row["x_loop"] = row["train_rate"] / loop["train_rate"] if loop else None
        row["x_single"] = row["train_rate"] / single["train_rate"] if single else None
        fx = lambda v: "-" if v is None else (str(v) if isinstance(v, int) else f"{v:.1f}")  # noqa: E731
        print(
            f"{impl:>16} {E:>5} {fx(ep):>6} {r['member_token_steps'] / 1e6:>10.2f} {r['train_s']:>8.2f} {r['wall_s']:>8.2f} "
            f"{row['train_rate'] / 1e6:>9.3f} {row['wall_rate'] / 1e6:>9.3f} {fx(row['x_loop']):>7} {fx(row['x_single']):>8}",
            flush=True,
        )

    record("loop", 1, None, bench_loop(cfg, loop_steps))
    record("single", 1, epochs, bench_single(cfg, single_members, epochs))
    for E in sizes:
        record("ensemble", E, epochs, bench_ensemble(cfg, E, epochs, args.threads, shared=False))
    for E in sizes[-1:]:
        record("ensemble-shared", E, epochs, bench_ensemble(cfg, E, epochs, args.threads, shared=True))
    processes = args.threads if args.processes is None else args.processes
    if processes > 1:
        for E in sizes[-1:]:
            record(f"ensemble-{processes}proc", E, epochs, bench_ensemble_processes(cfg, E, epochs, processes))
    best = max((r for r in rows if r["impl"].startswith("ensemble") and r["impl"] != "ensemble-shared"),
               key=lambda r: r["wall_rate"])  # fmt: skip
    extrap = {
        "member_token_steps": FULL_PROTOCOL_MEMBER_TOKEN_STEPS,
        "from": f"{best['impl']} E={best['E']}",
        "hours_train": FULL_PROTOCOL_MEMBER_TOKEN_STEPS / best["train_rate"] / 3600,
        "hours_wall": FULL_PROTOCOL_MEMBER_TOKEN_STEPS / best["wall_rate"] / 3600,
        "hours_single_wall": FULL_PROTOCOL_MEMBER_TOKEN_STEPS / rows[1]["wall_rate"] / 3600,
        "hours_loop": FULL_PROTOCOL_MEMBER_TOKEN_STEPS / rows[0]["wall_rate"] / 3600,
    }
    header["load_average_end"] = load_average()
    print(f"# load_average_end: {header['load_average_end']}")
    print(
        f"# full D={cfg.D} protocol (1000 runs x 7000 epochs x 8192 member-token-steps = "
        f"{FULL_PROTOCOL_MEMBER_TOKEN_STEPS:.3g}), no early stopping, no test evaluation: "
        f"{extrap['hours_train']:.2f} h (train) / {extrap['hours_wall']:.2f} h (wall) with {extrap['from']}; "
        f"single-model trainer {extrap['hours_single_wall']:.1f} h; plain loop {extrap['hours_loop']:.0f} h"
    )
    if args.json_path:
        from tnattn.io import write_json

        write_json(args.json_path, {"header": header, "rows": rows, "full_protocol": extrap})
        print(f"# wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

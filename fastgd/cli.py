"""The ``fastgd`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import fastgd


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e3,1e6: {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return sizes


def _rules(text: str) -> list[str]:
    from fastgd import _bench

    rules = [r.strip() for r in text.split(",") if r.strip()]
    known = {r.lower(): r for r in _bench.CONFIGS}
    bad = [r for r in rules if r.lower() not in known]
    if bad or not rules:
        raise argparse.ArgumentTypeError(
            f"unknown rule(s) {bad or text!r}; choose from {', '.join(_bench.CONFIGS)}"
        )
    return [known[r.lower()] for r in rules]


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
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda: the GPU tables (CuPy arrays; sizes 1e6, 1e7, 1e8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastgd`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "bench":
        from fastgd import _bench

        if args.rounds < 1:
            print("fastgd bench: --rounds must be >= 1", file=sys.stderr)
            return 2
        rules = args.rules or (["Adam", "SGD"] if args.quick else list(_bench.CONFIGS))
        sizes = args.sizes or ([10_000, 1_000_000] if args.quick else list(_bench.SIZES))
        rounds = 7 if args.quick and args.rounds == 15 else args.rounds
        print("Compiling kernels on first use (cached on disk afterwards)...", flush=True)
        if args.device == "cuda":
            _bench.report_cuda(rules, args.sizes or list(_bench.CUDA_SIZES), rounds)
            return 0
        _bench.report(rules, sizes, rounds,
                      model_rules=() if args.no_model else ("Adam", "SGD", "Adagrad"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

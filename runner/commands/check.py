"""`sdbake check`: render recipes and compare them with golden images; exit 1 on any regression."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbake.runner.commands import add_command
from sdbake.runner.locations import cache_dir_help


def register(subparsers: argparse._SubParsersAction) -> None:
    check = add_command(
        subparsers, "check", run_check_command,
        "render recipes and compare with golden images (HTML report, JUnit XML)",
        ["sdbake check recipes/ --golden tests/golden --report check-report --junit junit.xml",
         "sdbake check recipes/demo.toml --golden tests/golden --update   accept new renders"],
        description="Each output pairs with <golden>/<recipe name>/<output path>; the goldens' numerics fingerprint "
                    "(device, CPU ISA or GPU, torch, dtype, threads) is in <golden>/<recipe name>/fingerprint.json. "
                    "On the same fingerprint pixels must be equal; elsewhere they must meet the tolerances: "
                    "defaults max abs diff <= 8, mean abs diff <= 0.5, PSNR >= 45 dB, SSIM >= 0.995, overridden by "
                    "the recipe's [check] table, then by the flags below (which also force a tolerance "
                    "comparison). Exit 1 if any case fails.")
    check.add_argument("sources", nargs="*", default=["recipes"], metavar="RECIPE|DIR",
                       help="recipe files, or folders whose recipe files are checked (default: recipes)")
    check.add_argument("--golden", required=True, type=Path, metavar="DIR", help="the golden images")
    check.add_argument("--update", action="store_true", help="accept the new renders as goldens")
    check.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report (DIR/index.html)")
    check.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    check.add_argument("--no-cache", action="store_true", help="render every stage, ignoring the cache")
    check.add_argument("--cache-dir", type=Path, metavar="DIR", help=cache_dir_help())
    check.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    check.add_argument("--exact", action="store_true", help="require equal pixels, whatever the fingerprints")
    check.add_argument("--max-abs-diff", type=int, metavar="N", help="largest per-channel difference allowed")
    check.add_argument("--mean-abs-diff", type=float, metavar="X", help="largest mean per-channel difference "
                                                                       "allowed (0-255)")
    check.add_argument("--min-psnr", type=float, metavar="DB", help="smallest PSNR allowed, in dB")
    check.add_argument("--min-ssim", type=float, metavar="X", help="smallest SSIM allowed (0-1)")
    from sdbake.runner.commands.run import add_executor_options
    add_executor_options(check, summary=False)


def print_case(case, shown_comparisons: set[str]) -> None:
    label = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "added": "ADDED", "updated": "UPDATED"}[case.status]
    first, *rest = case.message.splitlines() or [""]
    print(f"{label:<8} {case.title}: {first}")
    for line in rest:
        print(f"         {line}")
    if case.comparison and case.status in ("pass", "fail") and case.comparison not in shown_comparisons:
        shown_comparisons.add(case.comparison)       # once per recipe: its cases share one comparison
        print(f"         comparison: {case.comparison}")
    if case.recipe_diff and case.failed:
        print("         the recipe changed since the golden (see the report)")


def run_check_command(args) -> int:
    from sdbake.runner.check.junit import write_junit
    from sdbake.runner.check.report import write_report
    from sdbake.runner.check.run import CheckOptions, run_check
    from sdbake.runner.commands.run import executor_options

    if args.max_abs_diff is not None and not 0 <= args.max_abs_diff <= 255:
        print("--max-abs-diff must be between 0 and 255", file=sys.stderr)
        return 2
    if args.exact and any(v is not None for v in (args.max_abs_diff, args.mean_abs_diff, args.min_psnr,
                                                   args.min_ssim)):
        print("--exact cannot be combined with tolerance flags", file=sys.stderr)
        return 2
    options = CheckOptions(golden=args.golden, update=args.update, no_cache=args.no_cache, cache_dir=args.cache_dir,
                           max_abs_diff=args.max_abs_diff, mean_abs_diff=args.mean_abs_diff,
                           min_psnr=args.min_psnr, min_ssim=args.min_ssim, exact=args.exact, device=args.device,
                           executor=executor_options(args))
    shown_comparisons: set[str] = set()
    result = run_check(args.sources, options, on_case=lambda case: print_case(case, shown_comparisons))
    for path in result.stale:
        print(f"stale    {path}: no render produced it (delete it if the output is gone for good)")
    if args.report:
        print(f"report: {write_report(result, args.report)}")
    if args.junit:
        print(f"junit: {write_junit(result, args.junit)}")
    counts = {status: sum(1 for c in result.cases if c.status == status)
              for status in ("pass", "fail", "error", "added", "updated")}
    print(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" ({result.seconds:.1f} s)")
    return 1 if result.failed else 0

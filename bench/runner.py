"""`python -m bench`: set up the world, run the cases, print the table, write the JSON."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from . import report
from .cases import CASES, Bench, CaseResult, Sizes, calibration, case_resync_edit, python_of, versions
from .env import REPO, SshdError, World
from .measure import BenchError

RESULTS = Path(__file__).resolve().parent / "results.json"
SCRATCH = Path(__file__).resolve().parent / "results" / "tmp"  # git-ignored


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(
        "p's benchmark suite: every case against a baseline measured in the same run "
        "(see bench/README.md)."))
    ap.add_argument("--repeat", type=int, default=None,
                    help="samples per side and case after one warm-up (default 5; 2 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="small inputs and 2 samples: a smoke run (results go to bench/results/tmp/)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated cases to run, from: {', '.join(CASES)}")
    ap.add_argument("--output", type=Path, default=None,
                    help="results file (default bench/results.json for a full run of every case, "
                         "else bench/results/tmp/results.json)")
    ap.add_argument("--profile", nargs="?", const=SCRATCH / "profiles", type=Path, default=None,
                    metavar="DIR", help="also run each p command once under cProfile; .prof/.txt files "
                                        "into DIR (default bench/results/tmp/profiles)")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-ControlMaster submit variant")
    ap.add_argument("--debug", action="store_true", help="tracebacks for failing cases")
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    names = list(CASES) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    args.names = names
    if args.output is None:
        full = not args.quick and args.only is None
        args.output = RESULTS if full else SCRATCH / ("results-quick.json" if args.quick else "results.json")
    return args


def find_p() -> Path:
    """The `p` console script of this interpreter's environment (the checkout's .venv when run from it)."""
    candidates = [Path(sys.executable).parent / "p", REPO / ".venv" / "bin" / "p"]
    for c in candidates:
        if c.is_file():
            return c
    raise BenchError("no `p` console script next to this python or in .venv/bin; run .ci/setup first "
                     "(or `pip install -e .`)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    p_exe = find_p()
    python = python_of(p_exe)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    load_before = report.loadavg()
    log(f"p bench: {', '.join(args.names)}; {args.repeat} samples after a warm-up"
        f"{' (quick sizes)' if args.quick else ''}; p = {p_exe}")
    cases: list[CaseResult] = []
    meta: dict = {
        "command": " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)]),
        "repeat": args.repeat, "quick": args.quick, "sizes": vars(sizes),
        "machine": report.machine(), "versions": versions(p_exe), "git": report.git_state(REPO),
    }
    world = None
    bench = None
    try:
        try:
            world = World(p_exe.parent)
            bench = Bench(world, p_exe, python, args.repeat, sizes, log, args.profile)
        except (SshdError, BenchError, OSError) as exc:
            log(f"p bench: cannot set up the loopback worker: {exc}")
            return 2
        meta["calibration"] = calibration(bench)
        todo = list(args.names)
        while todo:
            name = todo.pop(0)
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                if name in ("resync", "edit"):
                    both = "resync" in args.names and "edit" in args.names
                    if both:
                        todo = [n for n in todo if n not in ("resync", "edit")]
                    results = case_resync_edit(bench, name == "resync" or both, name == "edit" or both)
                elif name == "submit":
                    from .cases import case_submit

                    results = case_submit(bench, warm=not args.no_warm)
                else:
                    results = CASES[name](bench)
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
                if args.debug:
                    traceback.print_exc()
                msg = str(exc) if isinstance(exc, BenchError) else f"{exc.__class__.__name__}: {exc}"
                log(f"  ERROR: {msg}")
                results = [CaseResult(name, name, status="error", notes=[msg])]
            for r in results:
                r.params["case_wall_s"] = round(time.monotonic() - t0, 1)
            cases += results
            log(f"  ({time.monotonic() - t0:.0f}s)")
    finally:
        if bench:
            bench.close()
        if world:
            world.close()
    meta["load_average"] = {"before": load_before, "after": report.loadavg()}
    meta["total_wall_s"] = round(time.monotonic() - started, 1)
    print()
    print(report.table(cases))
    note_text = report.notes(cases)
    if note_text:
        print()
        print(note_text)
    data = report.results_json(meta, cases)
    report.write(args.output, data)
    print(f"\nresults: {args.output}  ({meta['total_wall_s']:.0f}s in all; summary {data['summary']})")
    return 1 if any(c.status == "error" for c in cases) else 0

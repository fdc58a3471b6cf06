"""The cases of issue 5. Each measures p and a baseline in the same run, alternating them sample by
sample after one warm-up of each, and turns the medians into ratios checked against the targets.

Conventions shared by all cases (see bench/README.md for the why):

* p runs as the console script a user types, with an isolated HOME; stdin is /dev/null.
* Baselines run OpenSSH/rsync as users type them: their ~/.ssh/config, no ControlMaster.
* "Cold" everywhere: before each p sample every ControlMaster p left under its HOME is closed, so p
  pays for its own SSH handshakes exactly like the baseline does (p's masters persist 60 s; a warm-master
  variant of `submit` is reported separately, as information).
* After each p sample the bench waits (untimed) until p's background processes (the watcher spawned by
  `p -d`) have exited, so they do not eat the CPU of the next sample; the wire bytes of the sample are
  counted until then, so they include everything p caused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from . import inputs
from .env import ClientHome, World, short_tmp_dir
from .measure import BenchError, Run, Series, median, metered, run

MB = 1_000_000
MiB = 1 << 20


@dataclass
class Sizes:
    submit_files: int = 200
    submit_file_bytes: int = 4096
    resync_files: int = 20_000
    resync_bytes: int = 200 * MB
    edit_bytes: int = 1 * MiB
    ls_records: int = 10_000
    ls_running: int = 100
    log_bytes: int = 1 << 30
    workers: int = 10
    unreachable: int = 2
    calibration_bytes: int = 256 * MiB

    @classmethod
    def quick(cls) -> Sizes:
        return cls(resync_files=2_000, resync_bytes=20 * MB, ls_records=1_000, ls_running=100,
                   log_bytes=64 * MiB, calibration_bytes=32 * MiB)


@dataclass
class Metric:
    """One row of the table."""

    label: str
    unit: str  # "s", "MB", "MB/s", "bytes"
    p: list[float]
    baseline: list[float]
    ratio: float | None  # p median / baseline median (or baseline/p for throughput)
    target: str  # human text, e.g. "≤ 1.0×"
    passed: bool | None  # None: information only
    value_text: str = ""  # what was compared to the target when it is not the ratio

    def to_json(self) -> dict:
        def st(values):
            return {"median": _r(median(values)), "min": _r(min(values)), "max": _r(max(values))} \
                if values else None

        return {"label": self.label, "unit": self.unit, "p": st(self.p), "baseline": st(self.baseline),
                "ratio": _r(self.ratio), "target": self.target, "value": self.value_text,
                "pass": self.passed}


def _r(x):
    return None if x is None or x != x else round(x, 4)


@dataclass
class CaseResult:
    name: str
    title: str
    status: str = "ok"  # ok | not implemented | error | skipped
    params: dict = field(default_factory=dict)
    p: Series | None = None
    baseline: Series | None = None
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        verdicts = [m.passed for m in self.metrics if m.passed is not None]
        if self.status != "ok":
            return False if self.status == "error" else None
        return all(verdicts) if verdicts else None

    def to_json(self) -> dict:
        return {
            "name": self.name, "title": self.title, "status": self.status,
            "pass": self.passed, "params": self.params,
            "p": self.p.to_json() if self.p else None,
            "baseline": self.baseline.to_json() if self.baseline else None,
            "metrics": [m.to_json() for m in self.metrics], "notes": self.notes,
        }


class Bench:
    """What every case needs: the world, the main client home (worker `bench` registered), settings."""

    def __init__(self, world: World, p_exe: Path, python: Path, repeat: int, sizes: Sizes,
                 log: Callable[[str], None], profile_dir: Path | None = None) -> None:
        self.world = world
        self.p_exe = p_exe
        self.python = python
        self.repeat = repeat
        self.sizes = sizes
        self.log = log
        self.profile_dir = profile_dir
        self.tmp = short_tmp_dir("pbi")  # generated inputs
        (world.worker_home / ".bench").mkdir(exist_ok=True)  # the baselines' own places on the worker
        self.home = world.new_home(ALIASES)
        self.register(self.home, "bench", "bench", check=True)
        self._n = 0
        # A user who syncs a 200 MB tree every job has said yes to big syncs once and for all: p asks
        # before syncs bigger than sync_warn_mb (when this p has that guard, its help shows --yes).
        help_text = self.p(self.home, "--help").stdout.decode(errors="replace")
        self.yes = ["-y"] if re.search(r"-y, --yes\b", help_text) else []

    # -- helpers ---------------------------------------------------------------------------------
    def p(self, home: ClientHome, *args: str, cwd: Path | None = None, devnull: bool = False,
          timeout: float = 300) -> Run:
        return run([self.p_exe, *args], home.env, cwd=cwd, stdout_devnull=devnull, timeout=timeout)

    def register(self, home: ClientHome, alias: str, name: str, check: bool = False) -> None:
        args = ["worker", "register", alias, "-n", name] + ([] if check else ["--no-check"])
        self.p(home, *args, timeout=60).check(f"p worker register {alias}")
        home.workers.append(name)

    def unique(self) -> int:
        self._n += 1
        return self._n

    def p_sample(self, home: ClientHome, fn: Callable[[], Run]) -> Run:
        """One cold p sample: masters closed before; after, background settled, masters closed, wire
        bytes counted until quiet."""
        home.close_masters()
        left = home.settle()
        if left:
            self.log(f"    (still running under the client HOME before the sample: {left})")

        def after() -> None:
            home.settle()
            home.close_masters()

        return metered(self.world.relay, fn, settle=after)

    def base_sample(self, fn: Callable[[], Run]) -> Run:
        return metered(self.world.relay, fn)

    def alternate(self, p_fn: Callable[[], Run], base_fn: Callable[[], Run],
                  before: Callable[[], None] | None = None, after_p: Callable[[Run], None] | None = None,
                  factor: int = 1) -> tuple[list[Run], list[Run]]:
        """Warm-up (one of each, not kept), then `repeat` × factor iterations, p first on even
        iterations and the baseline first on odd ones, so drift and caches favour neither."""
        ps: list[Run] = []
        bs: list[Run] = []
        last: dict[str, Run] = {}
        n = self.repeat * factor
        for i in range(-1, n):
            if before:
                before()
            order = ("p", "b") if i % 2 == 0 else ("b", "p")
            for side in order:
                if side == "p":
                    r = last["p"] = p_fn()
                    if after_p:
                        after_p(r)
                    if i >= 0:
                        ps.append(r)
                else:
                    r = last["b"] = base_fn()
                    if i >= 0:
                        bs.append(r)
            self.log(f"    {'warm-up' if i < 0 else f'sample {i + 1}/{n}'}: "
                     f"p {last['p'].seconds:.3f}s  baseline {last['b'].seconds:.3f}s")
        return ps, bs

    def profile(self, name: str, home: ClientHome, args: list[str], cwd: Path | None = None,
                prepare: Callable[[], None] | None = None) -> None:
        """With --profile: one extra cold run of `python -m cProfile -m p_tasks ARGS`, saved as
        <dir>/<name>.prof plus the top of the cumulative listing in <name>.txt."""
        if not self.profile_dir:
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{name}.prof"
        if prepare:
            prepare()
        home.close_masters()
        home.settle()
        r = run([self.python, "-m", "cProfile", "-o", out, "-m", "p_tasks", *args], home.env, cwd=cwd,
                stdout_devnull=True)
        home.settle()
        home.close_masters()
        import pstats

        with open(self.profile_dir / f"{name}.txt", "w") as fh:
            fh.write(f"# {' '.join(args)}: {r.seconds:.3f} s under cProfile, exit {r.returncode}\n")
            pstats.Stats(str(out), stream=fh).sort_stats("cumulative").print_stats(40)
        self.log(f"    profile: {out}")

    def ssh(self, home: ClientHome, alias: str, *remote: str) -> list[str]:
        return [*home.ssh_base(), alias, *remote]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


ALIASES = ["bench", *(f"bench-w{i}" for i in range(10))]
# Local-only cases take a fraction of a second per sample and scatter most on a busy machine: they get
# this many times --repeat samples.
LOCAL_FACTOR = 3


def secs(runs: list[Run]) -> list[float]:
    return [r.seconds for r in runs]


def series(argv: str, runs: list[Run]) -> Series:
    s = Series(argv)
    for r in runs:
        s.add(r)
    return s


def time_metric(label: str, ps: list[Run], bs: list[Run], limit: float | None) -> Metric:
    ratio = median(secs(ps)) / median(secs(bs))
    return Metric(label, "s", secs(ps), secs(bs), ratio, f"≤ {limit:.1f}×" if limit else "info",
                  None if limit is None else ratio <= limit)


def conns_note(ps: list[Run], bs: list[Run]) -> str:
    def fmt(runs):
        c = sorted({r.connections for r in runs if r.connections is not None})
        return "/".join(map(str, c)) or "?"

    return f"new SSH connections to the worker per run: p {fmt(ps)}, baseline {fmt(bs)}"


# ---------------------------------------------------------------------------------------------------
# calibration


def calibration(b: Bench) -> dict:
    """What the relay costs: `ssh true` and a bulk read, through the relay vs straight to sshd."""
    direct = dict(b.home.env)
    argv_relay = b.ssh(b.home, "bench")
    argv_direct = b.ssh(b.home, "bench-direct")
    n = max(3, b.repeat)
    out = {}
    for label, argv in (("relay", argv_relay), ("direct", argv_direct)):
        run([*argv, "true"], direct).check(f"ssh ({label})")
        t = [run([*argv, "true"], direct).check("ssh true").seconds for _ in range(n)]
        bulk = [run([*argv, f"head -c {b.sizes.calibration_bytes} /dev/zero"], direct, stdout_devnull=True)
                .check("ssh bulk").seconds for _ in range(max(2, n // 2))]
        out[label] = {"ssh_true_median_s": round(statistics.median(t), 4),
                      "bulk_MB_per_s": round(b.sizes.calibration_bytes / MB / statistics.median(bulk), 1)}
    b.log(f"  calibration: ssh true {out['direct']['ssh_true_median_s']:.3f}s direct, "
          f"{out['relay']['ssh_true_median_s']:.3f}s through the relay; bulk "
          f"{out['direct']['bulk_MB_per_s']} vs {out['relay']['bulk_MB_per_s']} MB/s")
    return out


# ---------------------------------------------------------------------------------------------------
# 1. submit


def case_submit(b: Bench, warm: bool = True) -> list[CaseResult]:
    sz = b.sizes
    tree = b.tmp / "submit-tree"
    info = inputs.make_tree(tree, sz.submit_files, sz.submit_files * sz.submit_file_bytes)
    home = b.home
    ssh = shlex.join(home.ssh_base())
    setup = ('mkdir -p .bench/submit && '
             'tmux -S "$HOME/.bench/tmux.sock" new-session -d -s keep "sleep 1000000"')
    run(b.ssh(home, "bench", setup), home.env).check("baseline setup (tmux keep-alive session)")

    def chain(extra_ssh: str = "") -> Callable[[], Run]:
        def go() -> Run:
            n = b.unique()
            remote = shlex.quote(f'tmux -S "$HOME/.bench/tmux.sock" new-session -d -s b{n} true')
            cmd = (f"rsync -a -e {shlex.quote(home.rsync_rsh() + extra_ssh)} {shlex.quote(str(tree))}/ "
                   f"bench:.bench/submit/{n}/ && {ssh}{extra_ssh} bench {remote}")
            return run([cmd], home.env, cwd=tree, shell=True).check("baseline chain")
        return go

    def p_run() -> Run:
        return b.p(home, "-d", "bench", "--", "true", cwd=tree).check("p -d bench -- true")

    ps, bs = b.alternate(lambda: b.p_sample(home, p_run), lambda: b.base_sample(chain()))

    def example(extra: str = "") -> str:
        return (f"rsync -a -e {shlex.quote(home.rsync_rsh() + extra)} {tree}/ bench:.bench/submit/N/ && "
                f"{ssh}{extra} bench 'tmux -S \"$HOME/.bench/tmux.sock\" new-session -d -s bN true'")

    res = CaseResult("submit", f"submit: `p -d bench -- true` from a {sz.submit_files}-file tree",
                     params={**info, "control_master": "cold (closed before each p sample)"},
                     p=series("p -d bench -- true", ps), baseline=series(example(), bs))
    res.metrics.append(time_metric("time", ps, bs, 1.0))
    res.notes.append(conns_note(ps, bs))
    b.profile("submit", home, ["-d", "bench", "--", "true"], cwd=tree)
    out = [res]

    if warm:
        # Information: both sides with a warm ControlMaster (p keeps its own; the chain gets one too).
        cp = home.root / "bm-%C"
        mux = f" -o ControlMaster=auto -o ControlPath={cp} -o ControlPersist=120"
        run([f"{ssh}{mux} bench true"], home.env, shell=True).check("baseline master")

        def p_warm() -> Run:
            home.settle()
            return metered(b.world.relay, p_run, settle=home.settle)

        b.log("  submit, warm ControlMaster on both sides (information)")
        p_run()
        ps2, bs2 = b.alternate(p_warm, lambda: b.base_sample(chain(mux)))
        w = CaseResult("submit-warm", "submit, both sides with a warm ControlMaster (information)",
                       params={**info, "control_master": "warm on both sides"},
                       p=series("p -d bench -- true", ps2),
                       baseline=series(example(mux), bs2))
        w.metrics.append(time_metric("time", ps2, bs2, None))
        w.notes.append(conns_note(ps2, bs2))
        out.append(w)
        home.close_masters()
        run([f"{ssh}{mux} -O exit bench"], home.env, shell=True)
    return out


# ---------------------------------------------------------------------------------------------------
# 2. resync and 3. small edit


STATS_SENT = re.compile(rb"Total bytes sent: ([\d,.]+)")


def rsync_sent(r: Run) -> int | None:
    m = STATS_SENT.search(r.stdout)
    return int(re.sub(rb"[,.]", b"", m.group(1))) if m else None


def case_resync_edit(b: Bench, do_resync: bool = True, do_edit: bool = True) -> list[CaseResult]:
    sz = b.sizes
    home = b.home
    tree = b.tmp / "resync-tree"
    t0 = time.monotonic()
    info = inputs.make_tree(tree, sz.resync_files, sz.resync_bytes, big=sz.edit_bytes, seed=2)
    b.log(f"  generated {info['files']} files, {info['bytes'] / MB:.0f} MB in {time.monotonic() - t0:.1f}s")
    big = tree / "big.bin"
    rsh = home.rsync_rsh()
    copy_cmd = ["rsync", "-a", "--stats", "-e", rsh, f"{tree}/", "bench:.bench/copy/"]
    t0 = time.monotonic()
    run(copy_cmd, home.env, timeout=900).check("initial rsync of the baseline copy")
    b.log(f"  baseline copy made in {time.monotonic() - t0:.1f}s")

    p_args = ["-d", *b.yes, "bench", "--", "true"]
    p_text = "p " + " ".join(p_args)

    def p_run() -> Run:
        return b.p(home, *p_args, cwd=tree, timeout=900).check(p_text)

    def base() -> Run:
        r = b.base_sample(lambda: run(copy_cmd, home.env, timeout=900).check("rsync -a"))
        r.stats_sent = rsync_sent(r)  # type: ignore[attr-defined]
        return r

    # The first job from this CWD on the worker: a full upload, not measured.
    t0 = time.monotonic()
    first = b.p_sample(home, p_run)
    b.log(f"  first job (full upload): {first.seconds:.2f}s, {first.up / MB:.1f} MB up")
    out = []
    baseline_text = shlex.join(copy_cmd)
    if do_resync:
        b.log("  resync: unchanged tree, new job")
        ps, bs = b.alternate(lambda: b.p_sample(home, p_run), base)
        res = CaseResult("resync", f"resync: another job from an unchanged {info['files']}-file / "
                         f"{info['bytes'] / MB:.0f} MB tree",
                         params={**info, "first_job_s": round(first.seconds, 3),
                                 "first_job_up_bytes": first.up},
                         p=series(p_text, ps), baseline=series(baseline_text, bs))
        res.baseline.extra["rsync_stats_bytes_sent"] = [getattr(r, "stats_sent", None) for r in bs]
        res.metrics.append(time_metric("time", ps, bs, 1.2))
        res.metrics.append(bytes_metric("bytes up", ps, bs, info["bytes"] / 100, "≤ 1% of tree",
                                        tree_bytes=info["bytes"]))
        res.notes.append(conns_note(ps, bs))
        b.profile("resync", home, p_args, cwd=tree)
        out.append(res)
        out.append(isolation_floor(b, home, info, base, baseline_text))
    if do_edit:
        b.log(f"  small edit: {sz.edit_bytes / MiB:.0f} MiB file rewritten before each iteration")
        ps, bs = b.alternate(lambda: b.p_sample(home, p_run), base, before=lambda: inputs.edit_file(big))
        res = CaseResult("edit", f"small edit: one {sz.edit_bytes / MiB:.0f} MiB file changed, next job",
                         params={**info, "edited_bytes": sz.edit_bytes},
                         p=series(p_text, ps), baseline=series(baseline_text, bs))
        res.baseline.extra["rsync_stats_bytes_sent"] = [getattr(r, "stats_sent", None) for r in bs]
        res.metrics.append(time_metric("time", ps, bs, 1.2))
        res.metrics.append(bytes_metric("bytes up", ps, bs, 2 * MB, "≤ 2 MB"))
        res.notes.append(conns_note(ps, bs))
        out.append(res)
    # Free the worker's disk: every job above left a full workdir.
    shutil.rmtree(b.world.worker_home / ".p" / "workdirs", ignore_errors=True)
    (b.world.worker_home / ".p" / "workdirs").mkdir()
    return out


def isolation_floor(b: Bench, home, info: dict, base: Callable[[], Run], baseline_text: str) -> CaseResult:
    """What any fresh, unshared copy of the tree costs on this worker's disk, whoever makes it: `cp -a`
    of the newest job's workdir on the worker itself (one ssh, like the baseline). A per-job workdir
    that shares no inode with another job's (so a job writing a file in place cannot change another
    job's copy) pays at least this on a filesystem without reflinks; p's --copy-dest does the copy
    inside rsync's receiver."""
    workdirs = b.world.worker_home / ".p" / "workdirs"
    newest = max(workdirs.iterdir(), key=lambda d: d.stat().st_mtime).name

    def floor() -> Run:
        dest = f".bench/floor-{b.unique()}"
        r = b.base_sample(lambda: run(b.ssh(home, "bench", f"cp -a .p/workdirs/{newest} {dest}"),
                                      home.env, timeout=900).check("cp -a on the worker"))
        shutil.rmtree(b.world.worker_home / dest, ignore_errors=True)
        return r

    b.log("  isolation floor: cp -a of a workdir on the worker")
    fs, bs = b.alternate(floor, base)
    floor_text = shlex.join(b.ssh(home, "bench", f"cp -a .p/workdirs/{newest} .bench/floor-N"))
    res = CaseResult("resync-floor", "resync floor: a fresh unshared copy of the tree on the worker "
                     "(`cp -a`, information)", params={**info},
                     p=series(floor_text, fs), baseline=series(baseline_text, bs))
    res.metrics.append(time_metric("time", fs, bs, None))
    res.notes.append("not p: the copy any isolated workdir costs on this disk, against the same "
                     "baseline; resync and edit cannot go below it without hard links or reflinks")
    return res


def bytes_metric(label: str, ps: list[Run], bs: list[Run], limit: float, target: str,
                 tree_bytes: int | None = None) -> Metric:
    pu = [r.up / MB for r in ps]
    bu = [r.up / MB for r in bs]
    value = median(pu) * MB
    text = f"{value / MB:.2f} MB" + (f" = {100 * value / tree_bytes:.2f}% of tree" if tree_bytes else "")
    return Metric(label, "MB", pu, bu, median(pu) / median(bu) if median(bu) else None, target,
                  value <= limit, text)


# ---------------------------------------------------------------------------------------------------
# 4. p ls with many records


def watcher_lock(home: ClientHome, worker: str) -> Path:
    """Where p's watcher lock for `worker` lives for this HOME (asked from p_tasks.watch when it can)."""
    try:
        from p_tasks import watch

        with mock.patch.dict(os.environ, {k: home.env[k] for k in ("HOME", "XDG_DATA_HOME")}):
            return Path(watch.lock_path(worker))
    except (ImportError, AttributeError):
        return home.data_dir / "watch" / f"{worker}.lock"


def case_ls(b: Bench) -> list[CaseResult]:
    sz = b.sizes
    home = b.world.new_home(ALIASES)
    b.register(home, "bench", "bench")
    t0 = time.monotonic()
    running = inputs.make_store(home.jobs_dir, sz.ls_records, sz.ls_running, "bench")
    b.log(f"  {sz.ls_records} records ({sz.ls_running} running) written in {time.monotonic() - t0:.1f}s")
    lock_file = watcher_lock(home, "bench")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_file, "a")  # noqa: SIM115 - held for the whole case
    fcntl.flock(lock, fcntl.LOCK_EX)
    notes = [f"the running jobs' worker counts as watched: the bench holds {lock_file.name} "
             "(as p's watcher does in steady state), so p ls must not touch the network"]
    mutated = []

    def check_store(r: Run) -> None:
        active = len(list((home.jobs_dir / "active").iterdir()))
        rows = r.stdout.decode().strip().count("\n") - 1
        if active != sz.ls_running or r.connections:
            mutated.append((active, r.connections))
            inputs.write_records(home.jobs_dir, [
                inputs.job_record(i, "bench", "running", time.time()) for i in running])
        if rows != sz.ls_running:
            raise BenchError(f"p ls listed {rows} jobs, expected {sz.ls_running}:\n{r.stdout[:500]!r}")

    base_argv = [str(b.python), "-c", "import invoke"]
    try:
        ps, bs = b.alternate(
            lambda: metered(b.world.relay, lambda: b.p(home, "ls").check("p ls")),
            lambda: run(base_argv, home.env).check("python -c 'import invoke'"),
            after_p=check_store, factor=LOCAL_FACTOR)
        res = CaseResult("ls", f"`p ls` with {sz.ls_records} job records ({sz.ls_running} running)",
                         params={"records": sz.ls_records, "running": sz.ls_running},
                         p=series("p ls", ps), baseline=series(shlex.join(base_argv), bs), notes=notes)
        res.metrics.append(time_metric("time", ps, bs, 1.5))
        if mutated:
            res.notes.append(f"p ls changed the store or used the network in {len(mutated)} samples "
                             f"(active markers, connections): {mutated}; store regenerated each time")
        res.notes.append(import_profile(b, home, ["ls"]))
        b.profile("ls", home, ["ls"])
        b.log("  p ls -a (all records; information)")
        ps2, bs2 = b.alternate(lambda: b.p(home, "ls", "-a", devnull=True).check("p ls -a"),
                               lambda: run(base_argv, home.env).check("import invoke"), factor=LOCAL_FACTOR)
        res2 = CaseResult("ls-all", f"`p ls -a` with {sz.ls_records} job records (information)",
                          params=res.params, p=series("p ls -a", ps2),
                          baseline=series(shlex.join(base_argv), bs2))
        res2.metrics.append(time_metric("time", ps2, bs2, None))
        b.profile("ls-all", home, ["ls", "-a"])
        return [res, res2]
    finally:
        lock.close()
        home.cleanup()


def import_profile(b: Bench, home: ClientHome, args: list[str]) -> str:
    """`python -X importtime -m p_tasks ARGS`: import time by package (self times summed), and whether
    the SSH stack (paramiko, fabric) was imported at all."""
    r = run([b.python, "-X", "importtime", "-m", "p_tasks", *args], home.env, stdout_devnull=True)
    by_pkg: dict[str, int] = {}
    for line in r.stderr.decode(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            pkg = m.group(4).split(".")[0]
            by_pkg[pkg] = by_pkg.get(pkg, 0) + int(m.group(1))
    total = sum(by_pkg.values())
    heavy = ", ".join(f"{name} {us / 1000:.0f} ms" for name, us in
                      sorted(by_pkg.items(), key=lambda kv: -kv[1])[:8])
    ssh_stack = sorted(set(by_pkg) & {"paramiko", "fabric", "cryptography", "tabulate", "yaml", "invoke"})
    return (f"import time of `p {' '.join(args)}` {total / 1000:.0f} ms, by package (self): {heavy}; "
            f"of the heavy libraries imported: {ssh_stack or 'none'}")


# ---------------------------------------------------------------------------------------------------
# 5. p logs of a big log


def case_logs(b: Bench) -> list[CaseResult]:
    """Straight to sshd (worker `direct`), not through the relay: on a 2-CPU box the relay's copying
    would cap both sides' throughput and pull the ratio towards 1 (see calibration)."""
    sz = b.sizes
    home = b.home
    if "direct" not in home.workers:
        b.register(home, "bench-direct", "direct")
    job = inputs.job_record(str(uuid.uuid4()), "direct", "done", time.time() - 3600, exit_code=0,
                            ended=time.time() - 3000)
    t0 = time.monotonic()
    inputs.worker_job(b.world.worker_home, job, log_bytes=sz.log_bytes)
    inputs.write_records(home.jobs_dir, [job])
    b.log(f"  {sz.log_bytes / MiB:.0f} MiB output.log written on the worker in {time.monotonic() - t0:.1f}s")
    log_rel = f".p/jobs/{job.id}/output.log"
    # Correctness first: every byte arrives, through the same pipes as the timed runs.
    for label, cmd in (("p logs", f"{shlex.quote(str(b.p_exe))} logs {job.id[:8]}"),
                       ("ssh cat", f"{shlex.join(b.ssh(home, 'bench-direct', 'cat', log_rel))}")):
        got = run([f"{cmd} | wc -c"], home.env, shell=True, timeout=600).check(label)
        n = int(got.stdout.split()[0])
        if n != sz.log_bytes:
            raise BenchError(f"{label} delivered {n} bytes of {sz.log_bytes}")
    home.close_masters()

    def p_run() -> Run:
        return b.p(home, "logs", job.id[:8], devnull=True, timeout=600).check("p logs")

    base_argv = b.ssh(home, "bench-direct", "cat", log_rel)
    ps, bs = b.alternate(lambda: b.p_sample(home, p_run),
                         lambda: b.base_sample(lambda: run(base_argv, home.env, stdout_devnull=True,
                                                           timeout=600).check("ssh cat")))
    for r in (*ps, *bs):  # no relay on this path: it counted nothing
        r.up = r.down = r.connections = None
    res = CaseResult("logs", f"`p logs` of a {sz.log_bytes / MiB:.0f} MiB output.log > /dev/null",
                     params={"log_bytes": sz.log_bytes},
                     p=series(f"p logs {job.id[:8]} > /dev/null", ps),
                     baseline=series(shlex.join(base_argv) + " > /dev/null", bs))
    tp = [sz.log_bytes / MB / s for s in secs(ps)]
    tb = [sz.log_bytes / MB / s for s in secs(bs)]
    ratio = median(secs(bs)) / median(secs(ps))
    res.metrics.append(Metric("throughput", "MB/s", tp, tb, ratio, "≥ 0.8×", ratio >= 0.8))
    rss = [r.maxrss_kb / 1024 for r in ps]
    res.metrics.append(Metric("client peak RSS", "MiB", rss, [r.maxrss_kb / 1024 for r in bs], None,
                              "< 100 MiB", max(rss) < 100, f"max {max(rss):.1f} MiB"))
    res.notes.append("straight to sshd (no relay), both sides")
    b.profile("logs", home, ["logs", job.id[:8]])
    shutil.rmtree(b.world.worker_home / ".p" / "jobs" / job.id, ignore_errors=True)
    return [res]


# ---------------------------------------------------------------------------------------------------
# 6. p ls reconcile with unreachable workers


def reconcile_timeout() -> tuple[float, str]:
    """The connect timeout p is configured to use when p ls asks workers (read from p itself)."""
    try:
        from p_tasks import workers

        for name in ("RECONCILE_TIMEOUT", "QUICK_TIMEOUT"):
            if hasattr(workers, name):
                return float(getattr(workers, name)), f"p_tasks.workers.{name}"
    except ImportError:
        pass
    return 3.0, "default 3 s (no timeout constant found in p_tasks.workers)"


def case_reconcile(b: Bench) -> list[CaseResult]:
    sz = b.sizes
    home = b.world.new_home(ALIASES)
    reachable = sz.workers - sz.unreachable
    names = []
    for i in range(reachable):
        b.register(home, f"bench-w{i}", f"w{i}")
        names.append(f"w{i}")
    dead = ["dead-refused", "dead-blackhole"][: sz.unreachable]
    for alias in dead:
        b.register(home, alias, alias)
    jobs = inputs.unknown_jobs(names + dead, per_worker=2)
    for job in jobs:
        if job.worker in names:  # finished on the worker: the answer moves them to done
            inputs.worker_job(b.world.worker_home, job, log_bytes=100)
    timeout, source = reconcile_timeout()
    t_int = int(timeout) if timeout == int(timeout) else timeout

    def p_run() -> Run:
        inputs.write_records(home.jobs_dir, jobs)  # every job unknown again
        r = b.p(home, "ls", timeout=120).check("p ls")
        states = {}
        for job in jobs:
            data = json.loads((home.jobs_dir / f"{job.id}.json").read_text())
            states.setdefault(job.worker in names, []).append(data["status"])
        r.states = states  # type: ignore[attr-defined]
        return r

    base_argv = [*home.ssh_base(), "-o", f"ConnectTimeout={t_int}", "-o", "BatchMode=yes",
                 "dead-blackhole", "true"]
    try:
        ps, bs = b.alternate(lambda: b.p_sample(home, p_run),
                             lambda: b.base_sample(lambda: run(base_argv, home.env, timeout=120)))
        res = CaseResult("reconcile", f"`p ls` reconcile, {sz.workers} workers with unknown jobs, "
                         f"{sz.unreachable} unreachable (refused port + blackhole)",
                         params={"workers": sz.workers, "unreachable": dead, "jobs_per_worker": 2,
                                 "timeout_s": timeout, "timeout_source": source},
                         p=series("p ls", ps), baseline=series(shlex.join(base_argv), bs))
        limit = median(secs(bs)) + 1.0
        value = median(secs(ps))
        res.metrics.append(Metric("time", "s", secs(ps), secs(bs), value / median(secs(bs)),
                                  f"≤ timeout + 1 s = {limit:.2f} s", value <= limit))
        last = ps[-1].states  # type: ignore[attr-defined]
        res.notes.append(f"after the last p ls: reachable workers' jobs {sorted(set(last.get(True, [])))}, "
                         f"unreachable workers' jobs {sorted(set(last.get(False, [])))}")
        err = ps[-1].stderr.decode(errors="replace").strip()
        if err:
            res.notes.append("p ls stderr: " + " | ".join(err.splitlines()[:4]))
        res.notes.append(f"baseline = measured time of plain ssh to the blackhole with ConnectTimeout="
                         f"{t_int} (the timeout p is configured with, {source})")
        res.notes.append(conns_note(ps, bs) + " (only connections to the real worker are counted)")
        b.profile("reconcile", home, ["ls"], prepare=lambda: inputs.write_records(home.jobs_dir, jobs))
        return [res]
    finally:
        home.cleanup()
        for job in jobs:
            shutil.rmtree(b.world.worker_home / ".p" / "jobs" / job.id, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# 7. p worker ls -c


def case_workers(b: Bench) -> list[CaseResult]:
    sz = b.sizes
    home = b.world.new_home(ALIASES)
    one = b.world.new_home(ALIASES)
    res = CaseResult("workers", f"`p worker ls -c` with {sz.workers} workers",
                     params={"workers": sz.workers})
    try:
        for i in range(sz.workers):
            b.register(home, f"bench-w{i}", f"w{i}")
        b.register(one, "bench-w0", "w0")
        probe = b.p_sample(home, lambda: b.p(home, "worker", "ls", "-c", timeout=120))
        if probe.returncode != 0:
            err = probe.stderr.decode(errors="replace").strip().splitlines()
            res.status = "not implemented"
            res.notes.append(f"`p worker ls -c` failed (exit {probe.returncode}): {' | '.join(err[-2:])}")
            return [res]
        if not probe.connections:
            res.status = "not implemented"
            res.notes.append("`p worker ls -c` exited 0 but made no SSH connection: "
                             "--check probes nothing yet")
            return [res]

        def p_run(h: ClientHome) -> Callable[[], Run]:
            return lambda: b.p_sample(h, lambda: b.p(h, "worker", "ls", "-c", timeout=120)
                                      .check("p worker ls -c"))

        base_argv = b.ssh(home, "bench-w0", "sh .p/bin/p-agent hello")

        def probe_one() -> Run:
            return b.base_sample(lambda: run(base_argv, home.env).check("ssh probe"))

        ps, bs = b.alternate(p_run(home), probe_one)
        res.p, res.baseline = series("p worker ls -c", ps), series(shlex.join(base_argv), bs)
        res.metrics.append(time_metric("time", ps, bs, 2.0))
        res.notes.append(conns_note(ps, bs))
        b.log("  one worker registered (information)")
        ps1, bs1 = b.alternate(p_run(one), probe_one)
        info = CaseResult("workers-1", "`p worker ls -c` with 1 worker (information)",
                          p=series("p worker ls -c", ps1), baseline=series(shlex.join(base_argv), bs1))
        info.metrics.append(time_metric("time", ps1, bs1, None))
        # What any fan-out with one connection per worker costs here: the hand-made parallel probe.
        # On loopback the client machine also pays the 10 servers' side of each handshake.
        fan = " ".join(f"{shlex.join(b.ssh(home, f'bench-w{i}', 'sh .p/bin/p-agent hello'))} >/dev/null &"
                       for i in range(sz.workers)) + " wait"
        b.log(f"  {sz.workers} plain ssh probes in parallel (information)")
        ps2, bs2 = b.alternate(p_run(home), lambda: b.base_sample(lambda: run([fan], home.env, shell=True)
                                                                  .check("parallel ssh probes")))
        par = CaseResult("workers-par", f"`p worker ls -c` with {sz.workers} workers vs {sz.workers} plain "
                         "ssh probes in parallel (information: the fan-out floor of this machine)",
                         p=series("p worker ls -c", ps2),
                         baseline=series(f"{sz.workers} × ssh bench-wN 'sh .p/bin/p-agent hello' &; wait",
                                         bs2))
        par.metrics.append(time_metric("time", ps2, bs2, None))
        par.notes.append(conns_note(ps2, bs2))
        b.profile("workers", home, ["worker", "ls", "-c"])
        return [res, info, par]
    finally:
        home.cleanup()
        one.cleanup()


CASES: dict[str, Callable[[Bench], list[CaseResult]]] = {
    "submit": case_submit,
    "resync": lambda b: case_resync_edit(b, True, False),
    "edit": lambda b: case_resync_edit(b, False, True),
    "ls": case_ls,
    "logs": case_logs,
    "reconcile": case_reconcile,
    "workers": case_workers,
}


def python_of(script: Path) -> Path:
    """The interpreter a console script runs with (its #! line), else this one."""
    try:
        first = script.read_bytes().split(b"\n", 1)[0]
    except OSError:
        return Path(sys.executable)
    if first.startswith(b"#!") and b"python" in first:
        return Path(first[2:].decode().split()[0])
    return Path(sys.executable)


def versions(p_exe: Path) -> dict:
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    return {"p": out([str(p_exe), "--version"]), "openssh": out(["ssh", "-V"]),
            "rsync": out(["rsync", "--version"]), "tmux": out(["tmux", "-V"])}

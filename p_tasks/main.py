"""The `p` Program: maps `p [opts] [worker] -- cmd…` and `p <subcommand> …` onto the Invoke tasks.

Invoke's parser cannot express p's grammar directly (a bare worker name is not a task, `--` joins the
command into one string, `worker register` would parse as two tasks), so :meth:`PProgram.rewrite` turns
p's argv into an Invoke argv first, and the exact command argv travels in the config (``p.argv``).
Errors are printed here and only here: one line, no traceback.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import re
import shlex
import sys

from invoke import Argument, Exit, ParseError, Program
from invoke.exceptions import UnknownFileType

from . import __version__
from .exceptions import PError, UsageError

USAGE = ("usage: p [-n|--no-sync] [-d|--detach] [-y|--yes] [--dry-run] [--no-gitignore] "
         "[-e NAME[=value]]... [--env-file FILE] [<worker>] -- <command> [<arg>...]")

HELP = f"""\
{USAGE}
       p <subcommand> [options]          (p <subcommand> --help for details)

Run <command> on a worker: sync the current directory (respecting .gitignore and .pignore, .git/
included) into a fresh ~/.p/workdirs/<job-id>/, start it in tmux there and attach this terminal.
Ctrl+B D detaches; the job keeps running. Without a registered worker, jobs run on the built-in
worker `local` (this machine).

Everything after `--` is run exactly as given: each argument keeps its bytes and no shell on the way
expands it. A single argument is a shell command line, run by the worker's login shell:
    p -- make -j16
    p beefy -- 'make && make test'

Run options:
  -n, --no-sync     do not sync; run in the worker user's home directory
  -d, --detach      start the job, print its id and return (no attach)
  -y, --yes         send a sync bigger than sync_warn_mb (config.yaml, default 100) without asking
  --dry-run         print what would be sent (files, size, the largest paths); start nothing
  --no-gitignore    send what .gitignore excludes too, for this run (.pignore still applies)
  -e NAME=value     set an environment variable for the job (-e NAME: take it from here);
  --env-file FILE   NAME=value lines. Values are never shown or recorded, only names
A .pignore file (gitignore syntax, in any directory) leaves out what the worker does not need, and
brings back with `!` what .gitignore excludes: `data/`, `!.env`.
When stdin or stdout is not a terminal (scripts, CI), p streams the job's output and exits with its code.

Subcommands:
{{subcommands}}

Other options:
  -h, --help [<subcommand>]   show this help, or a subcommand's
  -V, --version               show p's version
  --debug                     log what p does on stderr
"""

RUN_FLAGS = {"-n": "--no-sync", "--no-sync": "--no-sync", "-d": "--detach", "--detach": "--detach",
             "-y": "--yes", "--yes": "--yes", "--dry-run": "--dry-run", "--no-gitignore": "--no-gitignore"}


# Write failures that are the machine's state, not p's bugs: no space, quota, I/O error, read-only.
FULL_OR_BROKEN = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


def parse_error_text(text: str) -> str:
    """Invoke's parse errors in p's words, with where to look next."""
    missing = re.match(r"'([\w.-]+)' did not receive required positional arguments: (.+)", text)
    if missing:
        command = missing.group(1).replace(".", " ")
        needs = " ".join(f"<{name.strip().strip(chr(39)).replace('_', '-')}>"
                         for name in missing.group(2).split(","))
        return f"`p {command}` needs {needs}; see `p {command} --help`"
    unknown = re.match(r"No idea what '(.*)' is!", text)
    if unknown:
        return f"unknown option or argument '{unknown.group(1)}'; see `p --help`"
    return f"{text}; see `p --help`"


def internal_error(exc: Exception, argv: list[str] | None) -> int:
    """A bug in p: one line, the traceback only with --debug."""
    if "--debug" in (argv or sys.argv):
        raise exc
    print(f"p: internal error: {exc.__class__.__name__}: {exc}; rerun with --debug and report it",
          file=sys.stderr)
    return 70


class PProgram(Program):
    def core_args(self) -> list[Argument]:
        """Invoke's core flags, long names only (-h and -V kept): p's own -d, -n, -f, -c... win."""
        kept = []
        for arg in super().core_args():
            names = tuple(n for n in arg.names if len(n) > 1 or n in ("h", "V"))
            kept.append(Argument(names=names, kind=arg.kind, default=arg.default, help=arg.help,
                                 optional=arg.optional, incrementable=arg.incrementable))
        return kept

    def task_args(self) -> list[Argument]:
        return []

    # -- argv rewriting -------------------------------------------------------------------------

    def rewrite(self, argv: list[str]) -> tuple[list[str], list[str] | None]:
        """Return (invoke argv, exact job argv or None)."""
        prog, args = argv[0], list(argv[1:])
        head, tail = _split_dashdash(args)
        words = [t for t in head if not t.startswith("-")]
        subcommands = self._subcommands()
        if words and words[0] == "run" and tail is not None:  # `p run [opts] [worker] -- cmd`
            head.remove("run")
            words.pop(0)
        elif words and words[0] in subcommands:
            if tail is not None:
                raise UsageError(f"`p {words[0]}` takes no `--`; see `p {words[0]} --help`")
            return [prog, *self._rewrite_subcommand(head)], None
        if tail is None:
            return [prog, *self._no_command(head, words)], None
        return [prog, *self._rewrite_run(head, words)], tail

    def _subcommands(self) -> set[str]:
        return {name.split(".")[0] for name in self.collection.task_names} | {"help"}

    def _rewrite_subcommand(self, head: list[str]) -> list[str]:
        # --debug anywhere (`p --debug logs ID`, `p logs ID --debug`): invoke reads it only before
        # the task's name
        debug = ["--debug"] if "--debug" in head else []
        return [*debug, *self._subcommand_argv([t for t in head if t != "--debug"])]

    def _subcommand_argv(self, head: list[str]) -> list[str]:
        index = next(i for i, t in enumerate(head) if not t.startswith("-"))
        name, rest = head[index], head[:index] + head[index + 1 :]
        if name == "help":
            words = [t for t in rest if not t.startswith("-")]
            return ["--help", ".".join(words[:2])] if words else ["--help"]
        if name in self.collection.collections:
            sub_index = next((i for i, t in enumerate(rest) if not t.startswith("-")), None)
            if sub_index is None:
                return ["--help", name]
            name = f"{name}.{rest.pop(sub_index)}"
        if "--help" in rest or "-h" in rest:
            return ["--help", name]
        if name == "pull":
            rest = _optional_third(rest, "--dest")
        return [name, *rest]

    def _no_command(self, head: list[str], words: list[str]) -> list[str]:
        if not head or set(head) <= {"-h", "--help", "-V", "--version", "--debug"}:
            return head or ["--help"]
        if words:
            raise UsageError(
                f"'{words[0]}' is not a p subcommand; to run it as a job, put it after `--`: "
                f"p -- {shlex.join(head)} (see `p --help`)"
            )
        raise UsageError(f"missing `--` before the command; {USAGE}")

    def _rewrite_run(self, head: list[str], words: list[str]) -> list[str]:
        out = ["run"]
        head, self.job_env = _take_env_options(head)
        words = [t for t in head if not t.startswith("-")]
        if len(words) > 1:
            raise UsageError(f"expected at most one worker name before `--`, got {words}; {USAGE}")
        for token in head:
            if token.startswith("-") and token not in RUN_FLAGS and token not in ("--debug",):
                raise UsageError(f"unknown option '{token}'; {USAGE}")
            if token == "--debug":
                out.insert(0, token)
            elif token.startswith("-"):
                out.append(RUN_FLAGS[token])
        if words:
            out += ["--worker", words[0]]
        return out

    # -- running ---------------------------------------------------------------------------------

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:  # noqa: A002 - invoke's API
        code = 0
        try:
            self._run(sys.argv if argv is None else argv)
        except Exit as exc:
            if exc.message:
                say(exc.message)
            code = exc.code
        except ParseError as exc:
            say(f"p: {parse_error_text(str(exc))}")
            code = 2
        except UnknownFileType as exc:
            say(f"p: {exc}")
            code = 2
        except PError as exc:
            say(f"p: {exc.message}")
            code = exc.exit_code
        except KeyboardInterrupt:
            print("p: interrupted", file=sys.stderr)
            code = 130
        except BrokenPipeError:  # `p ls | head`: the reader has gone; say nothing, like cat
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 141
        except OSError as exc:
            if exc.errno not in FULL_OR_BROKEN or "--debug" in (argv or sys.argv):
                code = internal_error(exc, argv)
            else:  # `p logs ID > /dev/full`, a full local disk: the system's words, not a bug report
                where = f" {exc.filename}" if exc.filename else ""
                say(f"p: cannot write{where}: {exc.strerror}")
                code = 1
        except Exception as exc:  # a bug in p: one line, the traceback only with --debug
            code = internal_error(exc, argv)
        if exit:
            sys.exit(code)
        self.exit_code = code

    def _run(self, argv: list[str]) -> None:
        if argv[1:2] == ["__complete"]:  # the shell completion scripts' hidden entry: never an error
            from .completion import complete

            lines = complete(argv[2:], self.namespace)
            print("\n".join(lines), end="\n" if lines else "")
            return
        self.create_config()
        self.job_argv: list[str] | None = None
        self.collection = self.namespace
        argv, self.job_argv = self.rewrite(list(argv))
        self.parse_core(argv)
        self.parse_collection()
        try:
            self.parse_tasks()
        except ValueError as exc:  # invoke converts typed option values with int()
            raise UsageError(f"bad option value ({exc}); see `p --help`") from None
        if self.args.help.value in self.collection.collections:
            self.print_collection(self.args.help.value)
            return
        if len(self.tasks) > 1:
            names = ", ".join(t.name for t in self.tasks)
            raise UsageError(f"one subcommand at a time, got: {names}")
        self.parse_cleanup()
        self.update_config()
        self.execute()

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=False)
        if self.job_argv is not None:
            env = getattr(self, "job_env", None) or {"items": [], "file": None}
            self.config.load_overrides({"p": {"argv": self.job_argv, "env": env}}, merge=False)
        if self.args.debug.value:
            logging.basicConfig(level=logging.DEBUG, format="p: %(name)s: %(message)s")
        self.config.merge()

    def print_help(self) -> None:
        rows = []
        for name in sorted(self.collection.task_names):
            task = self.collection[name]
            rows.append((name.replace(".", " "), (task.help_text if hasattr(task, "help_text") else "")
                         or (task.__doc__ or "").strip().splitlines()[0]))
        width = max((len(r[0]) for r in rows), default=0)
        listing = "\n".join(f"  {n.ljust(width)}  {h}" for n, h in rows if n != "run")
        print(HELP.format(subcommands=listing), end="")

    def print_task_help(self, name: str) -> None:
        if name == "run":
            self.print_help()
            return
        task = self.collection[name]
        ctx = self.parser.contexts[name]
        positional = " ".join(f"<{a.name.replace('_', '-')}>" for a in ctx.positional_args)
        print(f"usage: p {name.replace('.', ' ')} {positional} [options]".replace("  ", " "))
        print()
        for line in inspect.getdoc(task).splitlines():
            print(f"  {line}" if line.strip() else "")
        print()
        tuples = ctx.help_tuples()
        if tuples:
            print("Options:")
            self.print_columns(tuples)

    def print_collection(self, name: str) -> None:
        sub = self.collection.collections[name]
        print(f"usage: p {name} <subcommand> [options]\n\nSubcommands:")
        for task_name in sorted(sub.task_names):
            print(f"  {name} {task_name:<10}  {inspect.getdoc(sub[task_name]).splitlines()[0]}")

    def print_version(self) -> None:
        print(f"p {__version__}")


def _take_env_options(head: list[str]) -> tuple[list[str], dict]:
    """Pull -e/--env VALUE and --env-file FILE out of the run options (values may start with '-')."""
    rest, items, env_file = [], [], None
    tokens = iter(head)
    for token in tokens:
        name, eq, inline = token.partition("=")
        if token in ("-e", "--env", "--env-file") or (eq and name in ("--env", "--env-file")):
            value = inline if eq else next(tokens, None)
            if value is None:
                raise UsageError(f"{token} needs a value; {USAGE}")
            if name == "--env-file":
                env_file = value
            else:
                items.append(value)
        else:
            rest.append(token)
    return rest, {"items": items, "file": env_file}


def say(message: str) -> None:
    """Print an error as exactly one line: newlines from user input are shown escaped."""
    print(message.rstrip("\n").replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)


def _optional_third(rest: list[str], flag: str) -> list[str]:
    """Invoke positionals are always required: `p pull ID PATH DEST` passes DEST as ``flag``."""
    positions = [i for i, t in enumerate(rest) if not t.startswith("-")]
    if len(positions) == 3:
        index = positions[2]
        return [*rest[:index], flag, rest[index], *rest[index + 1 :]]
    return rest


def _split_dashdash(args: list[str]) -> tuple[list[str], list[str] | None]:
    if "--" not in args:
        return args, None
    index = args.index("--")
    return args[:index], args[index + 1 :]


def program_namespace():
    """The Collection `p` runs: ``p_tasks.ns`` plus `completion`, which is for the `p` command only."""
    from invoke import Collection

    from . import ns
    from .tasks.shell import completion

    root = Collection()
    for name, task in ns.tasks.items():
        root.add_task(task, name=name)
    for name, sub in ns.collections.items():
        root.add_collection(sub, name=name)
    root.add_task(completion)
    return root


def make_program() -> PProgram:
    return PProgram(name="p", binary="p", namespace=program_namespace(), version=__version__)


def main() -> None:
    make_program().run()

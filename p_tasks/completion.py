"""Shell completion for bash, zsh and fish: the scripts, and the hidden `p __complete WORD…` they call.

The scripts are small and static (no paths baked in, so a file written once keeps working): on TAB
they run ``p __complete`` with the words typed so far (the last one being the word under the cursor,
maybe empty) and show what it prints, one candidate per line as ``value<TAB>description``. Two
answers are directives instead: ``:files`` (complete local file names) and ``:command N`` (the
words from index N on are a command of their own, after ``--``: complete it as the shell would).

Invoke's own ``--complete`` is not used: it completes Invoke's grammar (task names, dotted
``worker.rm``), not p's (a worker name before ``--``, ``worker rm``, job ids). The grammar is read
from the task Collection, so new subcommands and flags complete without touching this module. Job
ids and worker names come from the local store and config.yaml: no network, no Fabric.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")
FILES = ":files"

# What each positional argument of a subcommand is, for completion.
RUNNING_JOB, ANY_JOB, WORKER, SSH_HOST, SHELL, NOTHING = "running", "job", "worker", "host", "shell", ""
POSITIONALS = {
    "attach": [RUNNING_JOB],
    "stop": [RUNNING_JOB],
    "logs": [ANY_JOB],
    "rm": [ANY_JOB],
    "pull": [ANY_JOB, NOTHING, FILES],
    "worker.register": [SSH_HOST],
    "worker.rm": [WORKER],
    "worker.default": [WORKER],
    "completion": [SHELL],
}
FILE_FLAGS = {"--dest"}  # flags whose value is a local path
TOP_FLAGS = {"--help": "show help", "--version": "show p's version", "--debug": "log what p does on stderr"}


@dataclass
class Candidate:
    value: str
    description: str = ""

    def line(self) -> str:
        return f"{self.value}\t{_one_line(self.description)}"


# ---------------------------------------------------------------------------------------------------
# `p __complete WORD…`


def complete(words: list[str], ns=None) -> list[str]:
    """The lines to print for ``words`` (what follows ``p``; the last one is being typed), with the
    grammar of ``ns`` (default: the `p` Program's Collection)."""
    *before, current = words or [""]
    if "--" in before:
        return [f":command {before.index('--') + 2}"]
    if ns is None:
        from .main import program_namespace

        ns = program_namespace()
    found = _complete(ns, before, current)
    if isinstance(found, str):
        return [found]
    return [c.line() for c in found if c.value.startswith(current)]


def _complete(ns, before: list[str], current: str) -> list[Candidate] | str:
    names = [w for w in before if not w.startswith("-")]
    if current.startswith("-") and (not names or names[0] not in _words(ns)):
        return _top_flags()  # before `--`: p's run flags
    if not names:
        run_flags = [w for w in before if w != "--debug"]
        return _workers() if run_flags else [*_subcommands(ns), *_workers()]
    head = names[0]
    if head == "help":
        return _help_topics(ns, names[1:])
    if head in ns.collections and len(names) == 1:
        return _subcommands(ns.collections[head])
    name = f"{head}.{names[1]}" if head in ns.collections else head
    if name not in ns.task_names:
        return [] if current else [Candidate("--", "the command follows")]  # after a worker name
    start = before.index(head)
    if head in ns.collections:
        start = before.index(names[1], start + 1)
    return _task_words(ns, name, before[start + 1:], current)


def _words(ns) -> set[str]:
    """The first words that name a subcommand (not a worker)."""
    return {n.split(".")[0] for n in ns.task_names} - {"run"} | {"help"}


def _task_words(ns, name: str, after: list[str], current: str) -> list[Candidate] | str:
    """Flags or the next positional of task ``name``; ``after`` are the words typed after its name."""
    context = next(c for c in ns.to_contexts() if c.name == name)
    flags = _flags(context)
    if after and after[-1] in flags and flags[after[-1]][1]:
        return FILES if after[-1] in FILE_FLAGS else []  # the value of a flag
    if current.startswith("-"):
        return [Candidate(flag, help_text) for flag, (help_text, _) in flags.items()]
    count = _positional_count(after, flags)
    kinds = POSITIONALS.get(name, [])
    kind = kinds[count] if count < len(kinds) else NOTHING
    return kind if kind == FILES else list(_values(kind))


def _positional_count(after: list[str], flags: dict[str, tuple[str, bool]]) -> int:
    """How many positionals are already typed, skipping flags and the values they take."""
    count, skip = 0, False
    for word in after:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = flags.get(word, ("", False))[1] and "=" not in word
        else:
            count += 1
    return count


def _flags(context) -> dict[str, tuple[str, bool]]:
    """``{--flag or -f: (help, takes a value)}`` of a task's parser context, positionals left out."""
    flags = {"--help": ("show this subcommand's help", False)}
    for arg in context.args.values():
        if arg.positional:
            continue
        for name in sorted(arg.names, key=len, reverse=True):
            flag = f"--{name}" if len(name) > 1 else f"-{name}"
            flags[flag] = (arg.help or "", arg.takes_value)
    return flags


def _top_flags() -> list[Candidate]:
    from .main import RUN_FLAGS

    run = {"--no-sync": "do not sync; run in the worker user's home", "--detach": "start, print the id",
           "--yes": "send a big sync without asking", "--dry-run": "print what would be sent; start nothing",
           "--no-gitignore": "send what .gitignore excludes too (.pignore still applies)"}
    flags = [Candidate(f, run.get(long, "")) for f, long in RUN_FLAGS.items()]
    flags += [Candidate(f, d) for f, d in TOP_FLAGS.items()]
    return [*flags, Candidate("--", "the command follows")]


def _subcommands(collection) -> list[Candidate]:
    found = []
    for name in sorted(collection.task_names):
        if "." not in name and name != "run":
            found.append(Candidate(name, _first_line(collection[name].__doc__)))
    for name in sorted(collection.collections):
        subs = ", ".join(sorted(collection.collections[name].task_names))
        found.append(Candidate(name, f"{name} subcommands: {subs}"))
    return found


def _help_topics(ns, names: list[str]) -> list[Candidate]:
    if not names:
        return _subcommands(ns)
    if names == ["worker"]:
        return _subcommands(ns.collections["worker"])
    return []


def _values(kind: str) -> Iterator[Candidate]:
    if kind in (RUNNING_JOB, ANY_JOB):
        yield from job_ids(running_only=kind == RUNNING_JOB)
    elif kind == WORKER:
        yield from (c for c in _workers() if c.value != "local")
    elif kind == SSH_HOST:
        yield from (Candidate(h, "from ~/.ssh/config") for h in ssh_hosts())
    elif kind == SHELL:
        yield from (Candidate(s, f"completion script for {s}") for s in SHELLS)


def job_ids(running_only: bool) -> list[Candidate]:
    """Short ids (8 characters, the full id where two share them) of the jobs in the local store:
    the active ones (``running_only``) or all, newest first, described by status, worker, command."""
    from .store import BadRecord, Store

    store = Store()
    ids = store.ids(active_only=running_only)
    every = store.ids() if running_only else ids
    shorts = [i[:8] for i in every]
    found = []
    for job_id in ids:
        record = store._read(store.path(job_id))
        if isinstance(record, BadRecord):
            continue
        short = job_id[:8] if shorts.count(job_id[:8]) == 1 else job_id
        found.append((record.started_at or 0, Candidate(short, _describe_job(record))))
    return [c for _, c in sorted(found, key=lambda item: item[0], reverse=True)]


def _describe_job(job) -> str:
    return f"{job.status_text()} on {job.worker}: {job.command}"


def _workers() -> list[Candidate]:
    from .config import LOCAL, load
    from .exceptions import PError

    try:
        cfg = load()
    except PError:
        return []
    found = [Candidate(w.name, f"worker ({w.connection})") for w in cfg.workers]
    if not cfg.find(LOCAL):
        found.append(Candidate(LOCAL, "worker (this machine)"))
    return found


def ssh_hosts() -> list[str]:
    """The plain ``Host`` aliases of ~/.ssh/config (no patterns); Include is not followed."""
    try:
        with open(os.path.expanduser("~/.ssh/config"), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    hosts = []
    for line in lines:
        match = re.match(r"\s*host\s*[= ]\s*(.*)", line, re.IGNORECASE)
        if match:
            hosts += [h for h in match.group(1).split() if not set(h) & set("*?!")]
    return list(dict.fromkeys(hosts))


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].rstrip(".") if (text or "").strip() else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# the scripts


def script(shell: str) -> str:
    return {"bash": BASH, "zsh": ZSH, "fish": FISH}[shell]


BASH = r"""# bash completion for p; generated by `p completion bash`.
# Install: p completion bash > ~/.local/share/bash-completion/completions/p
#      or: eval "$(p completion bash)" in ~/.bashrc
_p() {
    local out line n
    COMPREPLY=()
    out="$(command p __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" || return 0
    case "$out" in
        :files)
            compopt -o default 2>/dev/null
            return 0 ;;
        ":command "*)
            n="${out#:command }"
            if declare -F _command_offset >/dev/null; then
                _command_offset "$n"
            elif [ "$COMP_CWORD" -eq "$n" ]; then
                mapfile -t COMPREPLY < <(compgen -c -- "${COMP_WORDS[COMP_CWORD]}")
            else
                compopt -o default 2>/dev/null
            fi
            return 0 ;;
    esac
    while IFS= read -r line; do
        [ -n "$line" ] && COMPREPLY+=("${line%%$'\t'*}")
    done <<< "$out"
}
complete -F _p p
"""

ZSH = r"""#compdef p
# zsh completion for p; generated by `p completion zsh`.
# Install: p completion zsh > "${fpath[1]}/_p"   (a directory in $fpath you can write to)
#      or: source <(p completion zsh) in ~/.zshrc, after compinit
_p() {
    local out line value desc n
    local -a lines candidates
    out="$(command p __complete "${(@)words[2,CURRENT]}" 2>/dev/null)" || return 1
    lines=("${(@f)out}")
    case "${lines[1]}" in
        :files)
            _files
            return ;;
        ":command "*)
            n="${lines[1]#:command }"
            shift "$n" words
            (( CURRENT -= n ))
            _normal
            return ;;
    esac
    for line in "${lines[@]}"; do
        [[ -z "$line" ]] && continue
        value="${line%%$'\t'*}"
        desc="${line#*$'\t'}"
        value="${value//:/\\:}"
        if [[ -n "$desc" ]]; then
            candidates+=("$value:$desc")
        else
            candidates+=("$value")
        fi
    done
    (( ${#candidates} )) && _describe -t p-words 'p' candidates
}
if [[ "${zsh_eval_context[-1]}" == loadautofunc ]]; then
    _p "$@"
else
    compdef _p p
fi
"""

FISH = r"""# fish completion for p; generated by `p completion fish`.
# Install: p completion fish > ~/.config/fish/completions/p.fish
function __p_complete
    set -l words (commandline -opc) (commandline -ct)
    set -l out (command p __complete $words[2..-1] 2>/dev/null)
    or return
    switch "$out[1]"
        case ':files'
            __fish_complete_path (commandline -ct)
        case ':command *'
            set -l n (string replace ':command ' '' -- $out[1])
            __fish_complete_subcommand --commandline $words[(math $n + 1)..-1]
        case '*'
            printf '%s\n' $out
    end
end
complete -c p -f -a '(__p_complete)'
"""

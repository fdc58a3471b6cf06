"""The one funnel to the worker-side agent (docs/design.md, "How an agent call is made").

Every agent verb goes through :func:`call`: it builds the script, runs it on the worker, installs or
upgrades the agent when the worker answers 97 (missing/outdated; no extra round trip otherwise), strips
whatever the login shell printed before the reply marker, and raises :class:`AgentError` naming the verb
and the worker.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .exceptions import AgentError
from .workers import Worker

log = logging.getLogger("p.agent")

MARKER = "@@p-agent-reply@@"
OUTDATED = 97
AGENT_FILES = ("p-agent", "p_agent.py")

PRELUDE = f"""\
PH="$HOME/.p"
p_have="$(cat "$PH/bin/p-agent.id" 2>/dev/null) $(wc -c < "$PH/bin/p-agent" 2>/dev/null | tr -d ' ')"
if [ "$p_have" != "$P_WANT" ]; then
    printf '%s\\n' 'p-agent: missing or outdated' >&2; exit {OUTDATED}
fi
printf '%s\\n' '{MARKER}'
exec sh "$PH/bin/p-agent" "$@" </dev/null
"""


@dataclass
class Reply:
    exited: int
    text: str
    stderr: str

    def fields(self) -> dict[str, str]:
        """`key=value` lines as a dict."""
        pairs = (line.partition("=") for line in self.text.splitlines())
        return {key: value for key, sep, value in pairs if sep}

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line]


@cache
def agent_file(name: str) -> str:
    return (resources.files("agent_sh") / name).read_text(encoding="utf-8")


@cache
def wanted_id() -> str:
    """Identity of the bundled agent: a content hash and the size (the size catches truncation)."""
    body = agent_file("p-agent").encode()
    return f"{hashlib.sha256(body).hexdigest()[:16]} {len(body)}"


def install_block() -> str:
    """Shell that writes the agent files atomically (temp file in the same dir, then mv)."""
    parts = ['mkdir -p "$HOME/.p/bin" || exit 1']
    for name in AGENT_FILES:
        body = agent_file(name)
        delim = f"P_AGENT_EOF_{zlib.crc32(body.encode()):08x}"
        parts.append(
            f'cat > "$HOME/.p/bin/.{name}.$$" <<\'{delim}\' || exit 1\n{body}'
            f'{"" if body.endswith(chr(10)) else chr(10)}{delim}\n'
            f'mv -f "$HOME/.p/bin/.{name}.$$" "$HOME/.p/bin/{name}" || exit 1'
        )
    ident = shlex.quote(wanted_id().split()[0])
    parts.append(f'printf \'%s\\n\' {ident} > "$HOME/.p/bin/.p-agent.id.$$" || exit 1')
    parts.append('mv -f "$HOME/.p/bin/.p-agent.id.$$" "$HOME/.p/bin/p-agent.id" || exit 1')
    return "\n".join(parts) + "\n"


def build_script(verb: str, args: list[str], install: bool = False) -> str:
    head = f"P_WANT={shlex.quote(wanted_id())}\n"
    body = install_block() if install else ""
    return f"{head}{body}set -- {shlex.join([verb, *args])}\n{PRELUDE}"


def call(
    worker: Worker, verb: str, *args: str, quick: bool = False, secret_env: dict[str, str] | None = None,
    through_master: float | None = None,
) -> Reply:
    """Run one agent verb on ``worker``; raise AgentError if it fails.

    ``quick``: short timeout, through OpenSSH rather than Fabric (keeps `p ls` light and bounded).
    ``secret_env``: variables for the agent's environment whose values must not reach any command
    line or log (the job's -e values).
    ``through_master``: through the OpenSSH master, the reply due within that many seconds.
    """
    how = {"quick": quick, "secret_env": secret_env, "through_master": through_master}
    reply = _run(worker, verb, list(args), install=False, **how)
    if reply.exited == OUTDATED:
        log.debug("agent on %s missing or outdated; installing", worker.name)
        reply = _run(worker, verb, list(args), install=True, **how)
    if reply.exited != 0:
        raise AgentError(worker.name, verb, _last_line(reply.stderr) or f"exit status {reply.exited}")
    return reply


def _run(worker: Worker, verb: str, args: list[str], install: bool, quick: bool,
         secret_env: dict[str, str] | None = None, through_master: float | None = None) -> Reply:
    log.debug("agent %s %s on %s (install=%s)", verb, args, worker.name, install)
    if secret_env:
        log.debug("agent %s: environment given by name only: %s", verb, sorted(secret_env))
    result = worker.run_script(build_script(verb, args, install), quick=quick, secret_env=secret_env,
                               through_master=through_master)
    head, sep, text = result.stdout.partition(MARKER + "\n")
    return Reply(result.exited, text if sep else "", result.stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    agent_lines = [line for line in lines if line.startswith("p-agent:")]
    line = (agent_lines or lines or [""])[-1]
    return line.removeprefix("p-agent:").strip()

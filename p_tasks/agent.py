"""The one funnel to the worker-side agent (docs/design.md, "How an agent call is made").

Every agent verb goes through :func:`call` (a small text reply) or :func:`stream` (raw bytes copied to
our stdout: logs): both build the script, run it on the worker, install or upgrade the agent when the
worker answers 97 (missing/outdated; no extra round trip otherwise) and drop whatever the login shell
printed before the reply marker; :func:`call` raises :class:`AgentError` naming the verb and the worker.
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

# The check that the agent on the worker is the bundled one, cheap enough for every call: the id p wrote
# at install (p-agent.id) and the POSIX cksum (CRC and size) of the installed files, which also catches
# damage that keeps the size. A worker without cksum (a trimmed busybox) is checked by size only.
PRELUDE = f"""\
PH="$HOME/.p"
p_id=; {{ read -r p_id <"$PH/bin/p-agent.id"; }} 2>/dev/null
if command -v cksum >/dev/null 2>&1; then
    p_sum=$(cat "$PH/bin/p-agent" "$PH/bin/p_agent.py" 2>/dev/null | cksum)
else
    p_sum=$(cat "$PH/bin/p-agent" "$PH/bin/p_agent.py" 2>/dev/null | wc -c)
    p_sum="- ${{p_sum##* }}"; P_WANT="${{P_WANT%% *}} - ${{P_WANT##* }}"
fi
if [ "$p_id $p_sum" != "$P_WANT" ]; then
    printf '%s\\n' 'p-agent: missing or outdated' >&2; exit {OUTDATED}
fi
printf '%s\\n' '{MARKER}'
exec sh "$PH/bin/p-agent" "$@" </dev/null
"""
HOME_BLOCK = ("# >>> home", "# <<< home")  # the part of p-agent that also runs ahead of every call


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


def installed_bytes(name: str) -> bytes:
    """What the install block leaves in ~/.p/bin/NAME (a here-document: it ends in a newline)."""
    body = agent_file(name)
    return (body if body.endswith("\n") else body + "\n").encode()


def posix_cksum(data: bytes) -> int:
    """The CRC that POSIX `cksum` prints: CRC-32 (polynomial 0x04C11DB7, most significant bit first,
    register starting at 0) over the data and then its length (least significant byte first, as few
    bytes as it takes), complemented. zlib's CRC-32 is the same polynomial bit-reversed, so it serves
    on bit-reversed bytes; its register is then reversed back."""
    length = len(data).to_bytes((len(data).bit_length() + 7) // 8, "little")
    register = zlib.crc32((data + length).translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{register:032b}"[::-1], 2) ^ 0xFFFFFFFF


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


@cache
def wanted_id() -> str:
    """`ID CRC SIZE` of the bundled agent files (p-agent, then p_agent.py): ID, a content hash, is
    what p-agent.id holds; CRC and SIZE are what `cat p-agent p_agent.py | cksum` prints on the worker."""
    body = b"".join(installed_bytes(name) for name in AGENT_FILES)
    return f"{hashlib.sha256(body).hexdigest()[:16]} {posix_cksum(body)} {len(body)}"


@cache
def home_block() -> str:
    """p-agent's `>>> home` block, which puts the real home directory into $HOME (docs/design.md),
    without its comment lines."""
    text = agent_file("p-agent")
    block = text[text.index(HOME_BLOCK[0]):text.index(HOME_BLOCK[1])]
    return "".join(ln for ln in block.splitlines(keepends=True) if not ln.lstrip().startswith("#"))


def install_block() -> str:
    """Shell that writes the agent files atomically (temp file in the same dir, then mv)."""
    parts = ['mkdir -p "$HOME/.p/bin" || exit 1']
    for name in AGENT_FILES:
        body = installed_bytes(name).decode()
        delim = f"P_AGENT_EOF_{zlib.crc32(body.encode()):08x}"
        parts.append(
            f'cat > "$HOME/.p/bin/.{name}.$$" <<\'{delim}\' || exit 1\n{body}{delim}\n'
            f'mv -f "$HOME/.p/bin/.{name}.$$" "$HOME/.p/bin/{name}" || exit 1'
        )
    ident = shlex.quote(wanted_id().split()[0])
    parts.append(f'printf \'%s\\n\' {ident} > "$HOME/.p/bin/.p-agent.id.$$" || exit 1')
    parts.append('mv -f "$HOME/.p/bin/.p-agent.id.$$" "$HOME/.p/bin/p-agent.id" || exit 1')
    return "\n".join(parts) + "\n"


def build_script(verb: str, args: list[str], install: bool = False) -> str:
    head = f"P_WANT={shlex.quote(wanted_id())}\n{home_block()}"
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


@dataclass
class Streamed:
    copied: int  # bytes of the reply copied to stdout
    exited: int  # the agent's exit status; 255: the SSH connection failed or dropped
    stderr: str

    def error_line(self) -> str:
        return _last_line(self.stderr) or f"exit status {self.exited}"


def stream(worker: Worker, verb: str, *args: str) -> Streamed:
    """Run a streaming agent verb (`follow`, `tail`) and copy its output to stdout byte for byte, in
    one connection (the OpenSSH master's, once warm). The caller judges ``exited``: a stream that
    ends early is often news about the job, not an error of p's."""
    from .attach import pump

    for install in (False, True):
        log.debug("agent %s %s on %s (install=%s)", verb, list(args), worker.name, install)
        script = build_script(verb, list(args), install).encode()
        copied, exited, stderr = pump(worker.script_argv(), MARKER, script)
        if exited != OUTDATED or copied:
            break
        log.debug("agent on %s missing or outdated; installing", worker.name)
    return Streamed(copied, exited, stderr.decode("utf-8", "replace"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    agent_lines = [line for line in lines if line.startswith("p-agent:")]
    line = (agent_lines or lines or [""])[-1]
    return line.removeprefix("p-agent:").strip()

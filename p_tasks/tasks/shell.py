"""The `completion` task: p's shell completion scripts (see p_tasks/completion.py)."""

from __future__ import annotations

from invoke import task

from ..exceptions import UsageError


@task(positional=["shell"], help={"shell": "bash, zsh or fish"})
def completion(c, shell):
    """Print the shell completion script for bash, zsh or fish.

    Install it with one command:

    bash:  p completion bash > ~/.local/share/bash-completion/completions/p
    zsh:   p completion zsh > "${fpath[1]}/_p"     (a directory in $fpath you can write to)
    fish:  p completion fish > ~/.config/fish/completions/p.fish
    Or for this shell only: eval "$(p completion bash)", source <(p completion zsh),
    p completion fish | source. It completes subcommands, flags, worker names and job ids
    (from this machine's job records: no network).
    """
    from ..completion import SHELLS, script

    if shell not in SHELLS:
        raise UsageError(f"no completion for '{shell}'; choose one of: {', '.join(SHELLS)}")
    print(script(shell), end="")

"""Shell completion as a user meets it: the scripts loaded in real bash, zsh and fish, asked for
candidates (and one real interactive TAB per shell, in a terminal); and the `p __complete` grammar
underneath. Job ids and worker names come from the isolated home's store and config.yaml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import p_executable, run_p

from p_tasks.completion import complete
from p_tasks.job import DONE, RUNNING, Job
from p_tasks.store import Store

RUNNING_ID = "a3f0c1d2-0000-4000-8000-000000000001"
DONE_ID = "b7e91234-0000-4000-8000-000000000002"
TWIN_IDS = ["c0ffee00-0000-4000-8000-000000000003", "c0ffee00-1111-4000-8000-000000000004"]


@pytest.fixture
def jobs(isolated_home):
    """A running job on gpu1, a finished one on local, and two finished ones sharing 8 characters."""
    store = Store()
    store.save(Job(RUNNING_ID, "gpu1", "/src", ["make", "-j16"], status=RUNNING, started_at=2.0))
    store.save(Job(DONE_ID, "local", "/src", ["pytest"], status=DONE, exit_code=0, started_at=1.0))
    for job_id in TWIN_IDS:
        store.save(Job(job_id, "local", "/src", ["true"], status=DONE, exit_code=0))
    config = isolated_home / ".config/p/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("default_worker: gpu1\nworkers:\n  - name: gpu1\n    connection: me@gpu1\n"
                      "  - name: beefy\n    connection: me@beefy:2222\n")


def values(*words: str) -> list[str]:
    return [line.split("\t")[0] for line in complete(list(words))]


# ---------------------------------------------------------------------------------------------------
# the grammar (`p __complete`)


def test_first_word_subcommands_and_workers(jobs):
    got = values("")
    assert {"attach", "logs", "ls", "stop", "pull", "rm", "prune", "worker", "completion"} <= set(got)
    assert {"gpu1", "beefy", "local"} <= set(got) and "run" not in got
    assert values("wo") == ["worker"]
    assert "local" in values("-n", "") and "attach" not in values("-n", "")


def test_run_flags_before_the_command(jobs):
    got = values("-")
    assert {"-n", "--no-sync", "-d", "--detach", "-y", "--yes", "--dry-run", "--no-gitignore", "--",
            "--help", "--version"} <= set(got)
    assert values("gpu1", "") == ["--"]
    assert values("gpu1", "--d") == ["--detach", "--dry-run", "--debug"]


def test_job_ids_running_for_attach_and_stop_all_for_logs_rm_pull(jobs):
    assert values("attach", "") == ["a3f0c1d2"]
    assert values("stop", "--timeout", "5", "") == ["a3f0c1d2"]
    for sub in ("logs", "rm", "pull"):
        assert set(values(sub, "")) == {"a3f0c1d2", "b7e91234", *TWIN_IDS}, sub
    assert values("logs", "b") == ["b7e91234"]
    line = next(x for x in complete(["attach", ""]))
    assert line == "a3f0c1d2\trunning on gpu1: make -j16"


def test_subcommand_flags_and_positions(jobs):
    assert {"--follow", "-f", "--tail", "-t", "--help"} <= set(values("logs", "-"))
    assert values("logs", "--tail", "") == []  # a number: nothing to offer
    assert values("pull", "a3f", "") == []  # a path on the worker: no network to list it
    assert complete(["pull", "a3f", "out/x", ""]) == [":files"]
    assert complete(["pull", "a3f", "--dest", ""]) == [":files"]
    assert values("worker", "") == ["default", "ls", "register", "rm"]
    assert set(values("worker", "rm", "")) == {"gpu1", "beefy"}
    assert values("help", "wor") == ["worker"] and values("help", "worker", "r") == ["register", "rm"]
    assert values("completion", "") == ["bash", "zsh", "fish"]


def test_after_double_dash_the_command_is_completed_by_the_shell(jobs):
    assert complete(["--", "ma"]) == [":command 2"]
    assert complete(["-n", "gpu1", "--", "make", ""]) == [":command 4"]


def test_worker_register_offers_ssh_config_hosts(isolated_home):
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh/config").write_text("Host buildbox gpu-*\n  HostName x\nhost=other\nHost *\n")
    assert values("worker", "register", "") == ["buildbox", "other"]


def test_broken_config_and_records_never_break_completion(isolated_home):
    config = isolated_home / ".config/p/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("workers: [")
    jobs_dir = isolated_home / ".local/share/p/jobs"
    (jobs_dir / "active").mkdir(parents=True)
    (jobs_dir / f"{RUNNING_ID}.json").write_text("{not json")
    (jobs_dir / "active" / RUNNING_ID).touch()
    assert "attach" in values("")
    assert values("attach", "") == []
    rc, out, err = run_p("__complete", "attach", "")
    assert (rc, out, err) == (0, b"", b"")


def test_complete_is_local_and_light(jobs):
    """No Fabric, no paramiko, no network: only the store and config.yaml are read."""
    code = ("import sys; from p_tasks.main import make_program; "
            "make_program().run(['p', '__complete', 'attach', ''], exit=False); "
            "print(sorted(m for m in ('fabric', 'paramiko', 'tabulate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "a3f0c1d2\trunning on gpu1: make -j16\n[]\n"


def test_complete_stays_quick_with_many_jobs(jobs):
    store = Store()
    for n in range(1000):
        store.save(Job(f"{n:08x}-0000-4000-8000-{n:012x}", "local", "/src", ["true"], status=DONE))
    started = time.monotonic()
    rc, out, _ = run_p("__complete", "logs", "")
    assert rc == 0 and len(out.splitlines()) == 1004
    assert time.monotonic() - started < 3  # typically ~0.4 s, most of it importing invoke


# ---------------------------------------------------------------------------------------------------
# the scripts, in the real shells


def test_completion_script_for_an_unknown_shell_is_refused():
    rc, out, err = run_p("completion", "tcsh")
    assert rc == 2 and err == b"p: no completion for 'tcsh'; choose one of: bash, zsh, fish\n"


def bash_complete(line_words: list[str]) -> list[str]:
    """COMPREPLY of `_p` for the words (the last one is under the cursor), in real bash."""
    words = " ".join(_bash_quote(w) for w in line_words)
    script = (f'source <(p completion bash) && COMP_WORDS=({words}) && COMP_CWORD={len(line_words) - 1} '
              '&& _p && printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def _bash_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_bash(jobs):
    assert bash_complete(["p", "attach", ""]) == ["a3f0c1d2"]
    assert set(bash_complete(["p", "rm", ""])) == {"a3f0c1d2", "b7e91234", *TWIN_IDS}
    assert bash_complete(["p", "wor"]) == ["worker"]
    assert bash_complete(["p", "worker", "de"]) == ["default"]
    assert bash_complete(["p", "gpu1", "--no-"]) == ["--no-sync", "--no-gitignore"]
    assert "echo" in bash_complete(["p", "--", "ech"])  # the command after `--`, as bash would


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")
def test_fish(jobs):
    query = "p completion fish | source; complete -C 'p attach '; complete -C 'p wor'; complete -C 'p -- ech'"
    proc = subprocess.run(["fish", "--no-config", "-c", query], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "a3f0c1d2\trunning on gpu1: make -j16"
    assert lines[1].startswith("worker\tworker subcommands: default, ls, register, rm")
    assert any(line.startswith("echo") for line in lines[2:])


ZSH_QUERY = r"""
autoload -Uz compinit && compinit -u -d "$HOME/.zcompdump"
source <(p completion zsh) || exit 1
(( $+functions[_p] )) && [[ "$_comps[p]" == _p ]] || exit 2
_describe() { local -a c; c=("${(@P)${@[-1]}}"); print -rl -- "${c[@]}"; }
words=(p attach ""); CURRENT=3; _p
words=(p worker r); CURRENT=3; _p
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_loads_and_answers(jobs):
    proc = subprocess.run(["zsh", "-f", "-c", ZSH_QUERY], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [
        "a3f0c1d2:running on gpu1: make -j16",
        "register:Register a worker; the first one registered becomes the default",
        "rm:Unregister a worker; refused while it has unfinished jobs",
    ]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_tab_in_a_real_interactive_shell(jobs, terminal, isolated_home, shell):
    """What a user sees: install the script as documented, open the shell, type `p att<TAB>a<TAB>`."""
    if shutil.which(shell) is None:
        pytest.skip(f"needs {shell}")
    bin_dir = os.path.dirname(p_executable())
    if shell == "bash":
        rc = isolated_home / ".bashrc"
        rc.write_text(f'PATH="{bin_dir}:$PATH"; PS1="$ "; eval "$(p completion bash)"\n')
        command = f"bash --rcfile {rc} -i"
    elif shell == "zsh":
        site = isolated_home / "zfuncs"
        site.mkdir()
        (site / "_p").write_text(run_p("completion", "zsh")[1].decode())
        (isolated_home / ".zshrc").write_text(f'PATH="{bin_dir}:$PATH"; PS1="$ "; fpath=({site} $fpath)\n'
                                              "autoload -Uz compinit && compinit -u\n")
        command = "zsh -i"
    else:
        completions = isolated_home / ".config/fish/completions"
        completions.mkdir(parents=True)
        (completions / "p.fish").write_text(run_p("completion", "fish")[1].decode())
        (completions.parent / "config.fish").write_text("function fish_prompt; echo '$ '; end\n")
        command = "fish -i"
    t = terminal(command, env={"HOME": str(isolated_home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                               "ZDOTDIR": str(isolated_home), "fish_greeting": ""})
    t.wait_for("$", timeout=15)
    t.send_keys("p att", literal=True)
    t.send_keys("Tab")
    t.wait_for("p attach ", timeout=15)
    t.send_keys("Tab")
    t.wait_for("p attach a3f0c1d2", timeout=15)


def test_every_positional_argument_has_a_completion_kind():
    """A new subcommand with a positional argument must say what completes there (POSITIONALS)."""
    from p_tasks.completion import POSITIONALS
    from p_tasks.main import program_namespace

    for context in program_namespace().to_contexts():
        if context.positional_args:
            assert len(POSITIONALS.get(context.name, [])) >= len(context.positional_args), context.name

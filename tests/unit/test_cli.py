"""The p grammar on top of Invoke: rewriting, help, and one-line usage errors (no worker needed)."""

import pytest

from p_tasks.exceptions import UsageError
from p_tasks.main import make_program


def rewrite(*args):
    program = make_program()
    program.collection = program.namespace
    return program.rewrite(["p", *args])


@pytest.mark.parametrize(
    "args, invoke_argv, job_argv",
    [
        (["--", "make", "-j16"], ["run"], ["make", "-j16"]),
        (["beefy", "--", "make"], ["run", "--worker", "beefy"], ["make"]),
        (["-n", "-d", "beefy", "--", "x"], ["run", "--no-sync", "--detach", "--worker", "beefy"], ["x"]),
        (["beefy", "--detach", "--", "x", "--", "y"], ["run", "--detach", "--worker", "beefy"],
         ["x", "--", "y"]),
        (["--", ""], ["run"], [""]),
        (["worker", "register", "me@h", "-n", "b"], ["worker.register", "me@h", "-n", "b"], None),
        (["worker", "ls", "--help"], ["--help", "worker.ls"], None),
        (["help", "worker", "rm"], ["--help", "worker.rm"], None),
        (["worker"], ["--help", "worker"], None),
        ([], ["--help"], None),
    ],
)
def test_rewrite(args, invoke_argv, job_argv):
    assert rewrite(*args) == (["p", *invoke_argv], job_argv)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["make"], "'make' is not a p subcommand"),
        (["-n"], "missing `--`"),
        (["a", "b", "--", "x"], "at most one worker name"),
        (["-x", "--", "x"], "unknown option '-x'"),
        (["worker", "ls", "--", "x"], "takes no `--`"),
    ],
)
def test_rewrite_errors(args, fragment):
    with pytest.raises(UsageError, match=fragment):
        rewrite(*args)


def run_p(capsys, *args):
    program = make_program()
    program.run(["p", *args], exit=False)
    out, err = capsys.readouterr()
    return program.exit_code, out, err


def test_help_explains_grammar_and_lists_subcommands(capsys):
    code, out, err = run_p(capsys, "--help")
    usage = "[--env-file FILE] [<worker>] -- <command>"
    assert code == 0 and usage in out
    assert "worker register" in out and err == ""


def test_subcommand_help_does_not_run_it(capsys):
    code, out, _ = run_p(capsys, "worker", "rm", "--help")
    assert code == 0 and out.startswith("usage: p worker rm <name>")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--"], "nothing to run after `--`"),
        (["nosuch", "--", "true"], "worker 'nosuch' is not registered"),
        (["worker", "ls", "--bogus"], "unknown option or argument '--bogus'; see `p --help`"),
        (["worker", "ls", "worker", "rm", "x"], "unknown option or argument 'worker'"),
        (["completion"], "`p completion` needs <shell>; see `p completion --help`"),
        (["pull", "abc"], "`p pull` needs <remote-path>; see `p pull --help`"),
        (["help", "nosuch"], "unknown option or argument 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, args, fragment):
    code, out, err = run_p(capsys, *args)
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1 and err.startswith("p: ")
    assert "Traceback" not in err


def test_version(capsys):
    code, out, _ = run_p(capsys, "--version")
    assert code == 0 and out.startswith("p 0.")


def test_ls_with_no_jobs_prints_headers(capsys):
    code, out, err = run_p(capsys, "ls")
    assert code == 0 and out.split() == ["ID", "WORKER", "CWD", "COMMAND", "STATUS", "DURATION",
                                         "--", "------", "---", "-------", "------", "--------"]
    code, out, err = run_p(capsys, "ls", "--json")
    assert (code, out.strip()) == (0, "[]")

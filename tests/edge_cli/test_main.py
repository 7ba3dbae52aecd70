"""The error boundary (in-process) and the help text of every command."""
from __future__ import annotations

import argparse

import pytest

from device_profiles import ProfileError
from edge_cli import main as cli_main
from edge_runtime.errors import BundleError


def _run(func, capsys):
    code = cli_main.run_command(argparse.Namespace(command="x", func=func))
    return code, capsys.readouterr().err


def _raise(exc):
    def func(args):
        raise exc
    return func


@pytest.mark.parametrize("exc", [BundleError("bad\nbundle"), ProfileError("bad profile")])
def test_user_errors_are_one_line_exit_2(exc, capsys):
    code, err = _run(_raise(exc), capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: edge-runtime x: bad")


def test_missing_third_party_package_gives_the_extra(capsys):
    code, err = _run(_raise(ModuleNotFoundError("No module named 'torch'", name="torch")), capsys)
    assert code == 2 and 'pip install "edge-runtime[export]"' in err and "Traceback" not in err


def test_our_own_import_error_is_a_bug(capsys):
    code, err = _run(_raise(ImportError("cannot import name 'x'", name="edge_runtime.session")), capsys)
    assert code == 3 and "Traceback" in err and "please report" in err


def test_internal_bug_prints_traceback_and_report_line(capsys):
    code, err = _run(_raise(KeyError("oops")), capsys)
    assert code == 3 and "Traceback" in err and "bug in edge-runtime" in err and "please report" in err


def test_failed_check_is_exit_1(capsys):
    assert _run(lambda args: 1, capsys)[0] == 1


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_has_help_and_every_command_an_example():
    parser = cli_main.build_parser()
    commands = list(_subparsers(parser))
    commands += [(f"devices {n}", p) for n, p in _subparsers(dict(commands)["devices"])]
    assert {"devices", "profile", "inspect", "validate", "run", "export", "demo"} <= {n for n, _ in commands}
    for name, sub in commands:
        for action in sub._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{name} {action.dest} has no --help text"
        assert sub.epilog and "example" in sub.epilog, f"{name} has no example"


def test_mean_and_std_say_their_scale():
    export = dict(_subparsers(cli_main.build_parser()))["export"]
    helps = {a.dest: a.help for a in export._actions}
    assert "0..1" in helps["mean"] and "0..1" in helps["std"]


def test_export_says_when_target_sparsity_fell_short(capsys):
    from exporters.commands import _report_shortfall

    fit = {"target_sparsity": 0.9, "max_accuracy_drop": 0.5, "backoffs": [{}, {}],
           "activations": {"a": {"threshold": 0.1, "sparsity_after": 0.71},
                           "b": {"threshold": 0.2, "sparsity_after": 0.77}, "c": {"threshold": None}}}
    _report_shortfall(fit)
    out = capsys.readouterr().out
    assert "asked for 90% zeros" in out and "71-77%" in out and "--max-accuracy-drop" in out
    fit["activations"] = {"a": {"threshold": 0.1, "sparsity_after": 0.9}}
    _report_shortfall(fit)
    assert capsys.readouterr().out == ""

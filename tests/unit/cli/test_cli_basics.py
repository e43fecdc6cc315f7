"""The command line without servers: parsing, output formats, exit codes, the optional extra."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from scalepatterns.backpressure import advise_workers
from scalepatterns.cli import exits, run
from scalepatterns.cli.app import exit_code_of
from scalepatterns.cli.output import fields, jsonable, redact_text, table
from scalepatterns.cli.queue import DeadLetterFilter
from scalepatterns.errors import BackendUnavailable, ConfigurationError, DeadlineExceeded
from scalepatterns.queue import BrokerRefused, DeadMessage, TopologyConflict
from scalepatterns.sharding import ReshardError


def test_advise_prints_the_advisors_figures_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["advise", "--arrival-rate", "200", "--service-time", "0.05", "--target-wait", "0.005"]
    assert run([*argv, "--json"]) == exits.OK
    printed = json.loads(capsys.readouterr().out)
    advice = advise_workers(200, 0.05, 0.005)
    assert printed["workers"] == advice.workers == 13
    assert printed["expected_wait"] == advice.expected_wait
    assert printed["offered_load"] == 10.0


def test_advise_for_people_is_a_list_of_fields(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["advise", "--arrival-rate", "100", "--service-time", "0.05", "--target-wait", "0.01"]
    assert run(argv) == exits.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["workers", "7"]
    assert lines[-1].startswith("expected wait")
    assert "(target 10 ms)" in lines[-1]


@pytest.mark.parametrize(
    ("value", "parameter"), [("nan", "target_wait"), ("-1", "target_wait"), ("inf", "target_wait")]
)
def test_a_bad_number_is_a_usage_error_naming_the_parameter(
    value: str, parameter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["advise", "--arrival-rate", "1", "--service-time", "1", "--target-wait", value]
    assert run(argv) == exits.USAGE
    error = capsys.readouterr().err
    assert error.startswith("error: ConfigurationError")
    assert parameter in error


def test_a_missing_option_or_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["advise", "--arrival-rate", "1"]) == exits.USAGE
    assert "--service-time" in capsys.readouterr().err
    assert run(["no-such-command"]) == exits.USAGE


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == exits.OK
    out = capsys.readouterr().out
    for command in ("advise", "breaker", "dlq", "limiter", "outbox", "queue", "replicas", "shards"):
        assert f"  {command} " in out
    assert run(["--version"]) == exits.OK
    assert metadata.version("scalepatterns") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("rate", "x", "a rate"), exits.USAGE),
        (BackendUnavailable("redis", "down"), exits.UNREACHABLE),
        (BrokerRefused("amqp://u:***@h/", "403 ACCESS_REFUSED"), exits.UNREACHABLE),
        (DeadlineExceeded(1.0, "publish"), exits.UNREACHABLE),
        (ConnectionRefusedError("refused"), exits.UNREACHABLE),
        (TopologyConflict("jobs", "x-queue-type", "PRECONDITION_FAILED"), exits.FAILED),
        (ReshardError("a", "b", "row differs"), exits.FAILED),
    ],
)
def test_errors_map_to_exit_codes(error: BaseException, code: int) -> None:
    assert exit_code_of(error) == code


def test_driver_errors_map_by_kind() -> None:
    import redis
    import sqlalchemy.exc

    assert exit_code_of(redis.exceptions.ConnectionError("refused")) == exits.UNREACHABLE
    assert exit_code_of(redis.exceptions.ResponseError("WRONGTYPE")) == exits.FAILED
    operational = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("refused"))
    assert exit_code_of(operational) == exits.UNREACHABLE
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate"))
    assert exit_code_of(integrity) == exits.FAILED


def test_an_unknown_error_is_a_bug_and_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        exit_code_of(ZeroDivisionError())


def test_passwords_in_urls_are_never_printed() -> None:
    text = "at redis://:hunter2@db:6379/0 and amqp://guest:s3cr%40t@rabbit:5672/%2F, user@host"
    shown = redact_text(text)
    assert "hunter2" not in shown
    assert "s3cr" not in shown
    assert "redis://:***@db:6379/0" in shown
    assert "amqp://guest:***@rabbit:5672/%2F" in shown
    assert shown.endswith("user@host")


def test_a_url_password_in_an_error_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["breaker", "status", "x", "--redis-url", "notaurl://:hunter2@h"])
    assert code == exits.USAGE
    assert "hunter2" not in capsys.readouterr().err


def test_tables_align_columns_and_numbers() -> None:
    text = table(["name", "rows"], [["a", 5], ["long-name", 1200], ["c", None]])
    assert text.splitlines() == [
        "name       rows",
        "a             5",
        "long-name  1200",
        "c             -",
    ]
    assert fields([("a", True), ("longer", 0.5)]).splitlines() == ["a       yes", "longer  0.5"]


def test_json_output_carries_any_body() -> None:
    assert jsonable({"b": b"text", "raw": b"\xff\x00", "t": (1, 2)}) == {
        "b": "text",
        "raw": {"base64": "/wA="},
        "t": [1, 2],
    }


def test_dead_letter_filters_combine() -> None:
    def dead(id_: str, type_: str, error: str, message: str) -> DeadMessage:
        return DeadMessage(id_, type_, {}, error, message, 1, b"{}")

    letters = [
        dead("1", "email", "ValueError", "bad address"),
        dead("2", "email", "Reject", "unsubscribed"),
        dead("3", "report", "ValueError", "bad date"),
    ]

    def chosen(where: DeadLetterFilter) -> list[str]:
        return [m.id for m in letters if where(m) and m.id]

    assert chosen(DeadLetterFilter()) == ["1", "2", "3"]
    assert chosen(DeadLetterFilter(error_type="ValueError")) == ["1", "3"]
    assert chosen(DeadLetterFilter(type="email", error_type="ValueError")) == ["1"]
    assert chosen(DeadLetterFilter(grep="bad")) == ["1", "3"]
    assert chosen(DeadLetterFilter(ids=("2", "3"), grep="bad")) == ["3"]


def test_import_scalepatterns_loads_no_click() -> None:
    code = "import sys, scalepatterns; assert 'click' not in sys.modules, 'click loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_click_the_command_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from scalepatterns.cli import run\n"
        "sys.exit(run(['--help']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == exits.USAGE
    assert "pip install 'scalepatterns[cli]'" in result.stderr


def test_python_dash_m_and_the_console_script_run_the_same_command() -> None:
    scripts = metadata.entry_points(group="console_scripts", name="scalepatterns")
    assert [e.value for e in scripts] == ["scalepatterns.cli:main"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalepatterns",
            "advise",
            "--arrival-rate",
            "0",
            "--service-time",
            "1",
            "--target-wait",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workers"] == 1

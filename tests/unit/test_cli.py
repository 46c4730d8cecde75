"""The command line: --help everywhere, exit 2 with the field named on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.synthetic import Synth

COMMANDS = [[], ["stack"], ["stack", "up"], ["stack", "down"], ["stack", "status"], ["worker"],
            ["publish"], ["tail"], ["demo"], ["policy"], ["policy", "check"], ["policy", "test"],
            ["policy", "reload"], ["keys", "init"], ["keys", "rotate"], ["schemas", "export"], ["synth"],
            ["policy", "simulate"],
            ["deliver"], ["deliver", "webhook"], ["deliver", "file"], ["audit"], ["audit", "verify"],
            ["audit", "trail"], ["policy", "bundle"], ["partners"], ["partners", "sync"],
            ["partners", "principals"], ["partners", "credentials"]]


def sgbus(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bus", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120, check=False)


BENCH_COMMANDS = [[], ["run"], ["core"], ["report"], ["cluster"], ["opa"], ["redaction"], ["pseudonymise"]]


@pytest.mark.parametrize("cmd", BENCH_COMMANDS, ids=lambda c: " ".join(["bench", *c]))
def test_every_benchmark_command_has_help(cmd: list[str]) -> None:
    """`python -m bench` (the harness outside the product package) from the repository root."""
    result = subprocess.run([sys.executable, "-m", "bench", *cmd, "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).parents[2], timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m bench" in result.stdout


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "sgbus")
def test_every_command_has_help(cmd: list[str]) -> None:
    result = sgbus(*cmd, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_publish_refuses_an_invalid_line_with_exit_2_naming_the_field(tmp_path: Path) -> None:
    s = Synth(seed=2)
    good = s.domestic_abuse_incident(s.child())
    bad = s.domestic_abuse_incident(s.child())
    bad["subject"]["identifiers"]["nhs_number"] = "9434765918"
    result = sgbus("publish", "-", stdin=json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert result.returncode == 2
    assert "line 2: subject.identifiers.nhs_number:" in result.stderr
    assert "nothing published" in result.stderr
    assert "9434765918" not in result.stderr


def test_schemas_export_writes_one_schema_per_event_type_and_envelope(tmp_path: Path) -> None:
    result = sgbus("schemas", "export", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.glob("*.schema.json"))
    events = [n for n in names if n.count(".") == 4]  # <agency>.<name>.v<N>.schema.json
    assert "envelope.schema.json" in names and "opa-input.schema.json" in names
    assert len(events) >= 16
    assert {n.split(".")[0] for n in events} == {"police", "nhs", "school", "social_care", "bus"}
    schema = json.loads((tmp_path / "police.domestic_abuse_incident.v1.schema.json").read_text())
    assert "x-personal-data" in json.dumps(schema)


def test_keys_init_never_prints_key_material(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SGBUS_HOME": str(tmp_path)}
    result = sgbus("keys", "init", env=env)
    assert result.returncode == 0, result.stderr
    keyfile = json.loads((tmp_path / "keyring.json").read_text())
    for part in ("token", "seal"):
        for material in keyfile[part]["keys"].values():
            assert material not in result.stdout + result.stderr


def test_synth_output_is_deterministic_and_valid() -> None:
    args = ("synth", "--seed", "3", "--count", "50", "--now", "2026-11-01T00:00:00+00:00")
    first, second = sgbus(*args), sgbus(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.splitlines()) == 50


def test_synth_unknown_type_exits_2_naming_the_option() -> None:
    result = sgbus("synth", "--type", "police.nope.v1")
    assert result.returncode == 2
    assert "--type: unknown event type police.nope.v1" in result.stderr


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda e: e["subject"]["identifiers"].update(nhs_number="9434765918"), "subject.identifiers.nhs_number"),
    (lambda e: e.update(event_type="police.unicorn.v1"), "event_type"),
    (lambda e: e.update(occurred_at="2999-01-01T00:00:00+00:00"), "occurred_at"),
    (lambda e: e["payload"].update(circumstances="x" * 300_000), "$"),
])
def test_publish_names_the_failing_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    s = Synth(seed=2)
    e = s.domestic_abuse_incident(s.child(min_age=5))
    mutate(e)
    result = sgbus("publish", "-", stdin=json.dumps(e) + "\n")
    assert result.returncode == 2
    assert f"line 1: {field}:" in result.stderr


def test_a_bad_setting_names_its_variable_and_not_its_value() -> None:
    """Found in review: a bad SGBUS_ value was a pydantic traceback naming the field."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bus", "audit", "verify", "--offline"], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "SGBUS_BATCH_SIZE": "s3cret-not-a-number"})
    assert done.returncode == 2
    assert "SGBUS_BATCH_SIZE" in done.stderr and "s3cret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("variable", ["SGBUS_KAFKA_BOOTSTRAP", "SGBUS_OPA_URL", "SGBUS_AUDIT_DSN"])
def test_the_demo_refuses_to_run_against_a_deployment(variable: str) -> None:
    """Found in review: the demo published synthetic children wherever the settings pointed."""
    import os
    import subprocess
    import sys

    value = "postgresql://x@db.example/a" if variable == "SGBUS_AUDIT_DSN" else "https://example.org:1"
    done = subprocess.run([sys.executable, "-m", "bus", "demo"], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, variable: value})
    assert done.returncode == 2 and variable in done.stderr


def test_an_unquoted_nhs_number_is_refused_without_echoing_its_digits() -> None:
    """Found in review: click printed "unexpected extra argument(s) (476 5919)", part of a
    child's number, to the terminal and any log of it."""
    from typer.testing import CliRunner

    from bus.cli import app

    result = CliRunner().invoke(app, ["audit", "trail", "--nhs-number", "943", "476", "5919"])
    assert result.exit_code == 2
    assert "476" not in result.output and "5919" not in result.output and "quote" in result.output


def test_a_home_another_user_could_have_filled_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Noticed in review: $SGBUS_HOME was trusted whatever its owner or mode, so a directory
    another user can write could hand sgbus a planted keyring or credentials."""
    import os

    from typer.testing import CliRunner

    from bus.cli import app
    from bus.security.files import untrusted_home

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    ok = CliRunner().invoke(app, ["audit", "lookups"], env={"SGBUS_HOME": str(home)})
    assert "SGBUS_HOME" not in ok.output
    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    os.chown(home, 4242, 4242)
    theirs = CliRunner().invoke(app, ["audit", "lookups"], env={"SGBUS_HOME": str(home)})
    assert theirs.exit_code == 2 and "owned by another user (uid 4242)" in theirs.output
    # As that user: their own home, but everyone may write it.
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    assert untrusted_home(home) is None
    os.chmod(home, 0o777)  # noqa: S103 - the point of the test
    assert untrusted_home(home) == "writable by every user"
    os.chmod(home, 0o770)  # noqa: S103 - group-writable: a Kubernetes volume's fsGroup
    assert untrusted_home(home) is None
    os.chown(home, 0, 0)  # root's (a container's volume, an emptyDir 0777)
    os.chmod(home, 0o777)  # noqa: S103
    assert untrusted_home(home) is None
    os.chmod(home, 0o1777)  # noqa: S103 - root's but shared by every user, as /tmp is
    assert untrusted_home(home) == "writable by every user"

"""``deferred-emulator gae-env``: the environment an appengine-python-standard app needs."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner
from deferred_emulator.cli import cli
from deferred_emulator.gae_env import gae_environment, parse_address


def test_default_output_is_shell_exports_for_the_default_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFERRED_EMULATOR_HOST", raising=False)
    # When gae-env runs with no options
    result = CliRunner().invoke(cli, ["gae-env"])
    # Then it prints one export per variable the SDK reads, with the Cloud Tasks switch off
    assert result.exit_code == 0, result.output
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in result.output.splitlines())
    assert env == {
        "API_HOST": "127.0.0.1",
        "API_PORT": "8123",
        "HTTP_X_APPENGINE_API_TICKET": "deferred-emulator",
        "GAE_APPLICATION": "dev~local-project",
        "APPLICATION_ID": "dev~local-project",
        "APPENGINE_USE_CLOUDTASK_PUSH_QUEUE": "false",
    }


def test_the_emulator_address_comes_from_deferred_emulator_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the variable the clients use to find the emulator
    monkeypatch.setenv("DEFERRED_EMULATOR_HOST", "127.0.0.1:9911")
    # When gae-env prints JSON for another app id
    result = CliRunner().invoke(cli, ["gae-env", "--format", "json", "--app-id", "dev~shop"])
    # Then the API server is that emulator
    data = json.loads(result.output)
    assert (data["API_HOST"], data["API_PORT"], data["GAE_APPLICATION"]) == ("127.0.0.1", "9911", "dev~shop")


def test_dotenv_format_has_no_export() -> None:
    result = CliRunner().invoke(cli, ["gae-env", "--format", "dotenv", "--emulator", "http://localhost:8200"])
    assert result.output.splitlines()[:2] == ["API_HOST=localhost", "API_PORT=8200"]


@pytest.mark.parametrize("bad", ["localhost:http", "host:0", "host:70000", ":8123"])
def test_a_bad_address_is_one_line_and_exit_status_2(bad: str) -> None:
    result = CliRunner().invoke(cli, ["gae-env", "--emulator", bad])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "--emulator" in result.output


def test_addresses_in_every_form() -> None:
    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address("http://[::1]:9000/") == ("::1", 9000)
    assert parse_address("[::1]") == ("::1", 8123)
    assert parse_address("emulator") == ("emulator", 8123)
    assert gae_environment("::1", 9000)["API_HOST"] == "::1"

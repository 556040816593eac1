"""A new user's first hour: the README's Docker lines, compose, --app-url, and the flags table."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from deferred_emulator.cli import cli
from deferred_emulator.queueyaml import load_queue_yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
IMAGE = "deferred-emulator"


def entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT, as a list."""
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            return list(json.loads(line.removeprefix("ENTRYPOINT")))
    raise AssertionError("no ENTRYPOINT in docker/Dockerfile")


def parse_as_the_image_runs(args: list[str]) -> click.Context:
    """Parse the command the container runs (ENTRYPOINT + args) with the real CLI, without running it."""
    program, *rest = entrypoint() + args
    assert program == "deferred-emulator"
    name, *remaining = rest
    assert isinstance(cli, click.Group) and name in cli.commands, f"{name!r} is not a command"
    return cli.commands[name].make_context(name, remaining)


def readme_docker_runs() -> list[list[str]]:
    """Every ``docker run`` command in the README's shell blocks, continuation lines joined."""
    runs = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words[:2] == ["docker", "run"]:
                runs.append(words)
    return runs


def test_the_readme_has_docker_run_lines() -> None:
    assert len(readme_docker_runs()) >= 2


@pytest.mark.parametrize("words", readme_docker_runs(), ids=lambda w: " ".join(w)[:60])
def test_each_readme_docker_run_parses_with_the_entrypoint(words: list[str]) -> None:
    # The image name, then the flags handed to the ENTRYPOINT
    args = words[words.index(IMAGE) + 1 :]
    ctx = parse_as_the_image_runs(args)
    assert ctx.params["host"] == "0.0.0.0"
    assert "serve" not in args, "the ENTRYPOINT already runs serve"


def test_compose_publishes_both_ports_takes_a_queue_yaml_and_parses() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    emulator, app = compose["services"]["emulator"], compose["services"]["app"]
    assert "127.0.0.1:8123:8123" in emulator["ports"]
    assert any(str(port).endswith(":8080") and str(port).startswith("127.0.0.1:") for port in app["ports"])
    # The emulator's command parses as the image runs it, and names the queue.yaml mounted for it
    ctx = parse_as_the_image_runs(list(emulator["command"]))
    mounted = {v.split(":")[-2]: v for v in emulator["volumes"] if isinstance(v, str) and ":" in v}
    assert ctx.params["queue_yaml"] in mounted
    # The default file is there (paths are relative to docker/) and valid
    source = re.fullmatch(r"\$\{QUEUE_YAML:-([^}]+)\}:.*", mounted[ctx.params["queue_yaml"]])
    assert source is not None
    load_queue_yaml(ROOT / "docker" / source.group(1))


@pytest.mark.parametrize("url", ["localhost:8081", "ftp://x", "http://", "127.0.0.1:8080/app", "http://h:99999"])
def test_an_app_url_that_is_not_http_is_one_line_and_exit_2(url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(tmp_path / "t.db"), "--app-url", url])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--app-url" in result.output and "http://" in result.output


def test_every_serve_flag_is_in_the_readme_table() -> None:
    serve = cli.commands["serve"]
    table = {m for m in re.findall(r"^\| `(--[a-z-]+)", README, re.M)}
    flags = {opt for p in serve.params for opt in p.opts if opt.startswith("--") and not opt.startswith("--no-")}
    flags -= {"--help"}
    missing = sorted(flags - table - {"--dispatch"})
    assert not missing, f"flags missing from the README's table: {missing}"

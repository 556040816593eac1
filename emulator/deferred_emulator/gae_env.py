"""``deferred-emulator gae-env``: the environment an appengine-python-standard app needs to use the emulator."""

from __future__ import annotations

import json
import shlex

import click

#: Any non-empty value: the SDK refuses to make an API call without a security ticket.
TICKET = "deferred-emulator"
DEFAULT_APP_ID = "dev~local-project"
ENV_HOST = "DEFERRED_EMULATOR_HOST"
APP_ID_HELP = "Application id for datastore keys (GAE_APPLICATION / APPLICATION_ID)."
EMULATOR_HELP = "The emulator's address (default: DEFERRED_EMULATOR_HOST, else http://127.0.0.1:8123)."
FORMAT_HELP = "sh: export lines for eval; dotenv: KEY=value lines; json: one object."


def gae_environment(host: str, port: int, app_id: str = DEFAULT_APP_ID) -> dict[str, str]:
    """The variables that point appengine-python-standard's API calls at the emulator.

    ``API_HOST``/``API_PORT`` are read on every call by ``default_api_stub``; the ticket is read
    from the process environment (``HTTP_X_APPENGINE_API_TICKET``) when ``wrap_wsgi_app`` has no
    request header to use; ``APPENGINE_USE_CLOUDTASK_PUSH_QUEUE=true`` (SDK 3.1+) would send
    push tasks to Cloud Tasks over gRPC instead, so it is switched off.
    """
    return {
        "API_HOST": host,
        "API_PORT": str(port),
        "HTTP_X_APPENGINE_API_TICKET": TICKET,
        "GAE_APPLICATION": app_id,
        "APPLICATION_ID": app_id,
        "APPENGINE_USE_CLOUDTASK_PUSH_QUEUE": "false",
    }


def render(env: dict[str, str], fmt: str) -> str:
    """The variables as shell exports, dotenv lines or JSON."""
    if fmt == "json":
        return json.dumps(env, indent=2)
    prefix = "export " if fmt == "sh" else ""
    return "\n".join(f"{prefix}{key}={shlex.quote(value)}" for key, value in env.items())


class AddressError(click.ClickException):
    """Raised when the emulator address cannot be read: one line, exit status 2."""

    exit_code = 2


def parse_address(value: str) -> tuple[str, int]:
    """``host:port``, ``http://host:port`` or ``[::1]:port`` into host and port (8123 when absent)."""
    text = value.strip().split("://", 1)[-1].split("/", 1)[0]
    host, sep, tail = text.rpartition(":")
    if not sep or host.endswith(":") or (text.startswith("[") and not host.endswith("]")):
        host, tail = text, "8123"
    host = host.strip("[]")
    if not host or not tail.isdigit() or not 0 < int(tail) < 65536:
        raise AddressError(f"--emulator {value!r}: expected host:port, e.g. 127.0.0.1:8123")
    return host, int(tail)


@click.command("gae-env")
@click.option("--emulator", envvar=ENV_HOST, default="http://127.0.0.1:8123", help=EMULATOR_HELP)
@click.option("--app-id", default=DEFAULT_APP_ID, show_default=True, help=APP_ID_HELP)
@click.option(
    "--format", "fmt", type=click.Choice(["sh", "dotenv", "json"]), default="sh", show_default=True, help=FORMAT_HELP
)
def gae_env(emulator: str, app_id: str, fmt: str) -> None:
    """Print the environment an appengine-python-standard app needs: eval "$(deferred-emulator gae-env)"."""
    host, port = parse_address(emulator)
    if not app_id.strip():
        raise AddressError("--app-id must not be empty (e.g. dev~my-app)")
    click.echo(render(gae_environment(host, port, app_id), fmt))

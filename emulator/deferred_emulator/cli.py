"""The command line: ``deferred-emulator serve`` and the inspection commands."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import click
from aiohttp import web

from .api.common import runtime_key
from .api.grpc.server import GrpcServerError
from .app import create_app, note_bound
from .cli_inspect import COMMANDS as INSPECT_COMMANDS
from .cli_tail import tail
from .dblock import DatabaseInUse, DatabaseLock
from .frontdoor import FrontSite
from .gae_env import gae_env
from .queuesync import describe
from .queueyaml import QueueYamlError, load_queue_yaml
from .settings import DEFAULT_DB_PATH, Settings
from .store import Store, StoreError

logger = logging.getLogger(__name__)

HOST_HELP = "Address to bind; 0.0.0.0 exposes the emulator to your network (don't, outside a container)."
PORT_HELP = "Port to bind (REST and gRPC alike); 0 picks a free one."
GRPC_PORT_HELP = "Also serve gRPC alone on this port (0 picks a free one); the main port serves gRPC anyway."
APP_URL_HELP = "Base URL of your app, where App Engine tasks are POSTed."
TARGET_HELP = "Base URL for a service named by a task's or queue's target, as SERVICE=URL (repeatable)."
DB_HELP = "SQLite file that keeps tasks across restarts, or :memory:."
QUEUE_YAML_HELP = "queue.yaml to load (default: ./queue.yaml when it exists)."
DISPATCH_HELP = "Deliver tasks automatically; with --no-dispatch they run only through drain, run or the console."
RATE_HELP = "Deliver as fast as possible, ignoring queue rates and concurrency limits."
AUTO_HELP = "Create unknown queues on first use instead of answering 404."
VCLOCK_HELP = "Use a clock that tests move forward with POST /_emulator/v1/clock:advance."
SIZE_HELP = (
    "Largest App Engine task accepted, in bytes: /rpc_http, the deferred client and tasks:batchAdd (App Engine's"
    " 102400). Tasks created through the Cloud Tasks API keep its own limit, about 1 MiB."
)
OIDC_HELP = (
    "The iss of the OIDC tokens HTTP tasks carry, and of /.well-known/openid-configuration: the URL handlers reach"
    " the emulator at (in Docker, e.g. http://tasks:8123).  [default: http://HOST:PORT as bound]"
)
DEADLINE_HELP = "Seconds the app has to answer a delivery."
SECRET_HELP = "Shared secret: deliveries carry X-Deferred-Signature, an HMAC-SHA256 the handlers check."
ALLOWED_HOST_HELP = (
    "Host name clients may use besides localhost and loopback addresses, e.g. the Docker service name"
    " (repeatable; a guard against DNS rebinding)."
)
LOG_HELP = "Log level: debug, info, warning or error."
TOMBSTONE_HELP = (
    "Seconds a used task name stays reserved after the task ran, failed or was deleted (App Engine: ~7 days)."
)

ENV = "DEFERRED_EMULATOR_"


class CliError(click.ClickException):
    """A user mistake: one line, exit status 2."""

    exit_code = 2


def split_host(value: str, port: int | None) -> tuple[str, int]:
    """``host``, ``host:port`` or ``http://host:port`` (DEFERRED_EMULATOR_HOST's form) into host and port."""
    text = value.split("://", 1)[-1].rstrip("/")
    host, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and not host.endswith(":"):
        return host.strip("[]"), port if port is not None else int(tail)
    return text.strip("[]"), port if port is not None else 8123


def parse_targets(values: tuple[str, ...]) -> dict[str, str]:
    """``SERVICE=URL`` pairs into a dict."""
    targets: dict[str, str] = {}
    for value in values:
        service, sep, url = value.partition("=")
        if not sep or not service or not url.startswith(("http://", "https://")):
            raise CliError(f"--target {value!r}: expected SERVICE=http://host:port")
        targets[service] = url
    return targets


def check_deadline(seconds: float) -> float:
    """``--dispatch-deadline`` if it is a number (click's range lets NaN through)."""
    if seconds != seconds:
        raise CliError("--dispatch-deadline nan: expected a number of seconds between 0.001 and 86415")
    return seconds


def check_app_url(url: str) -> str:
    """``--app-url`` as given, if it is an http(s) URL with a host; else one line and exit status 2."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        hint = f" (did you mean http://{url}?)" if "://" not in url else ""
        raise CliError(f"--app-url {url!r}: expected an http:// or https:// URL such as http://localhost:8080{hint}")
    return url


class OneLineGroup(click.Group):
    """A group whose usage errors are one line and exit status 2, like every other user mistake."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand, turning a usage error in its flags into one line."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "deferred-emulator"
            raise CliError(f"{where}: {exc.format_message()}") from None


@click.group(cls=OneLineGroup)
@click.version_option(package_name="deferred-emulator")
def cli() -> None:
    """A local App Engine task queue, deferred and Cloud Tasks emulator."""


cli.add_command(gae_env)

for _command in INSPECT_COMMANDS:
    cli.add_command(_command)
cli.add_command(tail)


@cli.command()
@click.option("--host", default="127.0.0.1", envvar=ENV + "HOST", show_default=True, help=HOST_HELP)
@click.option("--port", "-p", type=int, default=None, envvar=ENV + "PORT", help=PORT_HELP + "  [default: 8123]")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None, envvar=ENV + "GRPC_PORT", help=GRPC_PORT_HELP)
@click.option(
    "--app-url", default="http://localhost:8080", envvar=ENV + "APP_URL", show_default=True, help=APP_URL_HELP
)
@click.option("--target", "targets", multiple=True, envvar=ENV + "TARGET", help=TARGET_HELP)
@click.option("--db", "db_path", default=str(DEFAULT_DB_PATH), envvar=ENV + "DB", show_default=True, help=DB_HELP)
@click.option("--queue-yaml", type=click.Path(dir_okay=False), envvar=ENV + "QUEUE_YAML", help=QUEUE_YAML_HELP)
@click.option("--dispatch/--no-dispatch", default=True, envvar=ENV + "DISPATCH", show_default=True, help=DISPATCH_HELP)
@click.option("--ignore-rate-limits", is_flag=True, envvar=ENV + "IGNORE_RATE_LIMITS", help=RATE_HELP)
@click.option("--auto-create-queues", is_flag=True, envvar=ENV + "AUTO_CREATE_QUEUES", help=AUTO_HELP)
@click.option("--virtual-clock", is_flag=True, envvar=ENV + "VIRTUAL_CLOCK", help=VCLOCK_HELP)
@click.option(
    "--max-task-size",
    type=click.IntRange(1),
    default=102400,
    envvar=ENV + "MAX_TASK_SIZE",
    show_default=True,
    help=SIZE_HELP,
)
@click.option(
    "--dispatch-deadline",
    # At most App Engine's 24h15s; and NaN, which every comparison lets through, is not a number of seconds.
    type=click.FloatRange(0.001, 24 * 3600 + 15),
    default=600.0,
    envvar=ENV + "DISPATCH_DEADLINE",
    show_default=True,
    help=DEADLINE_HELP,
)
@click.option("--secret", envvar=ENV + "SECRET", help=SECRET_HELP)
@click.option("--allowed-host", "allowed_hosts", multiple=True, envvar=ENV + "ALLOWED_HOST", help=ALLOWED_HOST_HELP)
@click.option("--oidc-issuer", envvar=ENV + "OIDC_ISSUER", help=OIDC_HELP)
@click.option(
    "--tombstone-ttl",
    type=click.FloatRange(0),
    default=7 * 24 * 3600.0,
    envvar=ENV + "TOMBSTONE_TTL",
    show_default=True,
    help=TOMBSTONE_HELP,
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    envvar=ENV + "LOG_LEVEL",
    show_default=True,
    help=LOG_HELP,
)
def serve(
    host: str,
    port: int | None,
    targets: tuple[str, ...],
    db_path: str,
    queue_yaml: str | None,
    dispatch: bool,
    dispatch_deadline: float,
    log_level: str,
    **flags: object,
) -> None:
    """Run the emulator until Ctrl-C."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = split_host(host, port)
    if queue_yaml is None and Path("queue.yaml").is_file():
        queue_yaml = "queue.yaml"
    settings = Settings(
        host=host,
        port=port,
        targets=parse_targets(targets),
        db_path=db_path,
        queue_yaml=queue_yaml,
        dispatch=dispatch,
        dispatch_deadline_s=check_deadline(dispatch_deadline),
        log_level=log_level,
        app_url=check_app_url(str(flags["app_url"])),
        ignore_rate_limits=bool(flags["ignore_rate_limits"]),
        auto_create_queues=bool(flags["auto_create_queues"]),
        virtual_clock=bool(flags["virtual_clock"]),
        max_task_size=int(str(flags["max_task_size"])),
        secret=str(flags["secret"]) if flags["secret"] else os.environ.get(ENV + "SECRET") or None,
        tombstone_ttl_s=float(str(flags["tombstone_ttl"])),
        allowed_hosts=tuple(cast("tuple[str, ...]", flags["allowed_hosts"])),
        oidc_issuer=check_issuer(flags["oidc_issuer"]),
        grpc_port=cast("int | None", flags["grpc_port"]),
    )
    check_queue_yaml(settings.queue_yaml)
    lock = lock_db(settings.db_path)
    try:
        check_db(settings.db_path)
        try:
            sock = socket.create_server((settings.host, settings.port), reuse_port=False)
        except OSError as exc:
            raise CliError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        with sock:  # the site closes it when serving ends; this, when serving never starts
            check_port_free(settings.host, settings.grpc_port)
            asyncio.run(run_server(settings, sock))
    except (StoreError, QueueYamlError, GrpcServerError) as exc:
        raise CliError(str(exc)) from None
    finally:
        lock.release()


def check_issuer(value: object) -> str | None:
    """``--oidc-issuer``: an http(s) URL with a host and no query, or one line and exit 2."""
    if not value:
        return None
    text = str(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise CliError(f"--oidc-issuer {value!r}: expected a URL such as http://tasks-emulator:8123")
    return text


def check_port_free(host: str, port: int | None) -> None:
    """Fail with one line if ``port`` is taken, before anything else starts."""
    if not port:
        return
    try:
        socket.create_server((host, port), reuse_port=False).close()
    except OSError as exc:
        raise CliError(f"cannot listen for gRPC on {host}:{port}: {exc.strerror or exc}") from None


def check_queue_yaml(path: str | None) -> None:
    """Fail with one line (file, queue, field) if queue.yaml cannot be read or breaks a rule."""
    if path is None:
        return
    try:
        load_queue_yaml(path)
    except QueueYamlError as exc:
        raise CliError(str(exc)) from None


def lock_db(path: str) -> DatabaseLock:
    """Hold the database for this process, or fail with one line if another emulator has it."""
    lock = DatabaseLock(path)
    if path == ":memory:":
        return lock
    try:
        lock.acquire()
    except DatabaseInUse as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot use database {path}: {exc.strerror or exc}") from None
    return lock


def check_db(path: str) -> None:
    """Fail with one line if the database cannot be opened."""
    if path == ":memory:":
        return

    async def probe() -> None:
        store = await Store.open(path)
        await store.close()

    try:
        asyncio.run(probe())
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot use database {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # sqlite3 raises its own errors for unwritable paths
        raise CliError(f"cannot use database {path}: {exc}") from None


async def run_server(settings: Settings, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGINT or SIGTERM, then shut down cleanly."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = FrontSite(runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        note_bound(app, port)
        click.echo(banner(app, settings, port, site.grpc_port), err=False)
        # What is loaded by now (modules, queues, the app) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it, which took 50 ms at a time mid-request.
        # Only here, where the process is the emulator's own, not in the pytest plugin's thread.
        gc.freeze()
        await stop.wait()
        click.echo("deferred-emulator: shutting down")
    finally:
        await runner.cleanup()


def banner(app: web.Application, settings: Settings, port: int, grpc_port: int | None = None) -> str:
    """The few lines ``serve`` prints at start."""
    base = f"http://{settings.host}:{port}"
    grpc_also = f" and {settings.host}:{grpc_port} (gRPC only)" if grpc_port is not None else ""
    emulator = app[runtime_key].emulator
    lines = [
        f"deferred-emulator listening on {base}",
        f"  API       {base}/v2/projects/{settings.project}/locations/{settings.location}/queues",
        f"  gRPC      {settings.host}:{port}{grpc_also} (Cloud Tasks v2, v2beta3; no TLS)",
        f"  console   {base}/",
        f"  app       {settings.app_url}" + "".join(f"  {s}={u}" for s, u in settings.targets.items()),
        f"  db        {settings.db_path}",
        *([f"  queues    {settings.queue_yaml} (reloaded when it changes)"] if settings.queue_yaml else []),
        f"  clients   export DEFERRED_EMULATOR_HOST={settings.host}:{port}",
        "  queues",
    ]
    for queue in sorted(emulator.queues.values(), key=lambda q: q.name):
        lines.append(f"    {queue.name:<20} {describe(queue)}")
    if settings.ignore_rate_limits:
        lines.append("  rate limits ignored (--ignore-rate-limits)")
    if not settings.dispatch:
        lines.append("  automatic dispatch off (--no-dispatch): use drain, run or the console")
    return "\n".join(lines)

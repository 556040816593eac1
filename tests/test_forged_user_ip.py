"""A forged ``X-AppEngine-User-IP`` under appengine-python-standard's middleware runs nothing."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import pytest
from conftest import Handle, MakeEmulator

pytest.importorskip("google.appengine.api", reason="needs the gae extra (appengine-python-standard)")

#: Run in a process of its own: wrap_wsgi_app replaces os.environ for the whole process.
SCRIPT = textwrap.dedent(
    """
    import io, json, pickle, sys
    import deferred_client
    from google.appengine.api import wrap_wsgi_app

    seen = {}

    def app(environ, start_response):
        seen["remote"] = environ.get("REMOTE_ADDR")
        return deferred_client.application(environ, start_response)

    wrapped = wrap_wsgi_app(app)
    body = pickle.dumps((print, ("forged ran",), {}))
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/_ah/queue/deferred",
        "SERVER_NAME": "app", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "203.0.113.5",
        "HTTP_X_APPENGINE_USER_IP": "127.0.0.1",
        "HTTP_X_APPENGINE_TASKNAME": "forged",
        "HTTP_X_APPENGINE_QUEUENAME": "default",
        "HTTP_X_APPENGINE_TASKRETRYCOUNT": "0",
    }
    status = {}
    def start_response(s, headers, exc_info=None):
        status["s"] = s
    out = b"".join(wrapped(environ, start_response))
    print(json.dumps({"status": status["s"], "remote": seen.get("remote"), "body": out.decode()}))
    """
)


async def test_a_forged_user_ip_under_wrap_wsgi_app_is_refused(make_emulator: MakeEmulator) -> None:
    # Given an emulator the app's handler can fetch the signing secret from, and no secret in the app
    emu: Handle = await make_emulator(dispatch=False)
    env = {"DEFERRED_EMULATOR_HOST": emu.url, "PATH": "/usr/bin:/bin", "GAE_APPLICATION": "p~test"}
    # When a request from 203.0.113.5 claims X-AppEngine-User-IP: 127.0.0.1, through the SDK's middleware
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out.decode().strip().splitlines()[-1])
    # Then the middleware did make the request look local...
    assert answer["remote"] == "127.0.0.1"
    # ...and still the handler refused it, running nothing: only the emulator's signature counts
    assert answer["status"].startswith("403"), answer
    assert "forged ran" not in out.decode()
    assert "X-Deferred-Signature" in answer["body"]


async def test_the_secret_is_kept_in_the_database_and_never_given_to_a_page(make_emulator: MakeEmulator) -> None:
    emu: Handle = await make_emulator(dispatch=False)
    secret = (await emu.call("GET", "/_emulator/v1/secret"))["secret"]
    assert len(secret) >= 32
    assert await emu.emulator.store.delivery_secret() == secret
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Host": "evil.example"}):
        async with emu.http.get(emu.url + "/_emulator/v1/secret", headers=headers) as resp:
            assert resp.status == 403, headers
            assert secret not in await resp.text()


async def test_a_configured_secret_is_the_one_used(make_emulator: MakeEmulator) -> None:
    emu: Handle = await make_emulator(dispatch=False, secret="given")
    assert (await emu.call("GET", "/_emulator/v1/secret"))["secret"] == "given"

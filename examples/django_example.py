"""Django (a one-file project): defer work from a view; the deferred handler runs it at /_ah/queue/deferred.

    deferred-emulator serve --app-url http://127.0.0.1:8080 &
    DEFERRED_EMULATOR_HOST=127.0.0.1:8123 python examples/django_example.py
    curl -X POST http://127.0.0.1:8080/signup/ann && sleep 1 && curl http://127.0.0.1:8080/sent

In a regular project, wrap the application in ``wsgi.py`` the same way.
"""

from __future__ import annotations

import logging
import os
import sys

import deferred_client
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)
#: Welcome emails "sent" by the deferred task (a real app would call its mail service).
SENT: list[str] = []


def send_welcome(name: str) -> None:
    """The deferred task: runs later, in the app, when the emulator delivers it."""
    logger.info("sending a welcome email to %s", name)
    SENT.append(name)


@csrf_exempt  # signup is POSTed by a script in this example, not by a form
def signup(request: HttpRequest, name: str) -> JsonResponse:
    task = deferred_client.defer(send_welcome, name)
    return JsonResponse({"task": task.name}, status=202)


def sent(request: HttpRequest) -> JsonResponse:
    return JsonResponse(SENT, safe=False)


urlpatterns = [path("signup/<str:name>", signup), path("sent", sent)]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
        WSGI_APPLICATION=f"{__name__}.application",
    )

# wsgi.py: /_ah/queue/deferred goes to the deferred handler (before Django's CSRF check), the rest to Django.
application = deferred_client.wrap_wsgi_app(get_wsgi_application())

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    logging.basicConfig(level=logging.INFO)
    execute_from_command_line([sys.argv[0], "runserver", f"127.0.0.1:{os.environ.get('PORT', '8080')}", "--noreload"])

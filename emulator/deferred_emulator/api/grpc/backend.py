"""What a gRPC method reaches: the app's emulator, dispatcher and IAM policies, looked up per call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ...dispatcher import Dispatcher
from ...service import Emulator
from ..cloudtasks import iam_policies_key
from ..common import runtime_key
from ..stats import stats_of


@dataclass(frozen=True)
class Backend:
    """The aiohttp app the gRPC server serves beside (its runtime is filled in at startup), for one API version."""

    app: web.Application
    #: ``v2`` or ``v2beta3``: the message types of operations name it.
    version: str = "v2"
    #: operation id -> the API version of the batch that made it (GetOperation is not versioned).
    operation_versions: dict[str, str] = field(default_factory=dict)

    @property
    def emulator(self) -> Emulator:
        """The engine behind both transports."""
        return self.app[runtime_key].emulator

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher (for queue stats)."""
        return self.app[runtime_key].dispatcher

    @property
    def policies(self) -> dict[str, dict[str, Any]]:
        """Queue IAM policies, shared with REST."""
        return self.app[iam_policies_key]

    async def stats(self) -> dict[str, dict[str, Any]]:
        """Queue stats, as REST shows them."""
        return await stats_of(self.emulator, self.dispatcher)


#: A method: the request in REST JSON form in, the response in REST JSON form out.
Method = Callable[[Backend, dict[str, Any]], Awaitable[dict[str, Any]]]

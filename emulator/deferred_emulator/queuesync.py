"""Keeping the emulator's queues in line with queue.yaml: applied at start, reapplied when the file changes."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import suppress

from .models import QueueConfig, QueueState
from .queueyaml import QueueFile, QueueYamlError, load_queue_yaml
from .rates import rate_label
from .service import DEFAULT_QUEUE, Emulator

logger = logging.getLogger(__name__)

#: ``QueueConfig.source`` of a queue the file defined and no longer lists (paused, tasks kept).
REMOVED = "yaml-removed"
#: How often the file's mtime is looked at (a stat, never a scan of tasks).
POLL_S = 1.0

Stamp = tuple[int, int, int]


def merged(current: QueueConfig | None, wanted: QueueConfig, now_us: int, resume: bool) -> QueueConfig:
    """The queue as ``wanted`` by the file, keeping what the file does not own (creation, purge, API pauses)."""
    if wanted.mode == "push" and wanted.rate_per_s == 0:
        state = QueueState.PAUSED  # rate 0 pauses, as in production
    elif current is None or resume:
        state = QueueState.RUNNING
    elif current.source == REMOVED or (current.source == "yaml" and current.rate_per_s == 0):
        # It was paused by the file (removed, or rate 0), so the file resumes it.
        state = QueueState.RUNNING
    else:
        state = current.state  # a pause through the API or the CLI outlives a reload
    return wanted.with_changes(
        state=state,
        created_us=current.created_us if current else now_us,
        purge_us=current.purge_us if current else 0,
    )


def removed(current: QueueConfig) -> QueueConfig:
    """A queue the file no longer lists: paused with its tasks kept (``default`` returns to its defaults)."""
    if current.name == DEFAULT_QUEUE:
        state = QueueState.RUNNING if current.rate_per_s == 0 else current.state
        return QueueConfig(
            DEFAULT_QUEUE, state=state, source="default", created_us=current.created_us, purge_us=current.purge_us
        )
    return current.with_changes(state=QueueState.PAUSED, source=REMOVED)


async def apply_queue_file(emulator: Emulator, file: QueueFile) -> list[str]:
    """Bring the emulator's queues in line with ``file``; return one line per queue that changed."""
    changes: list[str] = []
    now = emulator.now_us()
    for wanted in file.queues:
        current = emulator.queues.get(wanted.name)
        queue = merged(current, wanted, now, file.resume_paused_queues)
        if queue != current:
            await emulator.put_queue(queue)
            changes.append(f"{'updated' if current else 'added'} {queue.name} ({describe(queue)})")
    listed = file.names()
    for current in list(emulator.queues.values()):
        if current.source == "yaml" and current.name not in listed:
            queue = removed(current)
            await emulator.put_queue(queue)
            changes.append(f"removed {queue.name} from the file: {describe(queue)}, tasks kept")
    emulator.total_storage_limit = file.total_storage_limit
    return changes


def describe(queue: QueueConfig) -> str:
    """A few words about a queue's settings, for the log."""
    if queue.mode == "pull":
        return "pull"
    conc = f", {queue.max_concurrent} at once" if queue.max_concurrent else ""
    return f"{rate_label(queue)}, bucket {queue.bucket_size}{conc}, {queue.state.value.lower()}"


def stamp(path: str) -> Stamp | None:
    """What identifies one version of the file: mtime, size and inode (None if it is missing)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class QueueYamlWatcher:
    """Applies queue.yaml at start and whenever its mtime, size or inode changes."""

    def __init__(self, emulator: Emulator, path: str, poll_s: float = POLL_S) -> None:
        self.emulator = emulator
        self.path = path
        self.poll_s = poll_s
        self.stamp: Stamp | None = None
        self.reloads = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<QueueYamlWatcher {self.path} reloads={self.reloads}>"

    async def load(self) -> QueueFile:
        """Read and apply the file now; a bad file raises QueueYamlError and changes nothing."""
        version = stamp(self.path)
        file = load_queue_yaml(self.path)
        for line in await apply_queue_file(self.emulator, file):
            logger.info("queue.yaml: %s", line)
        self.stamp = version
        return file

    def start(self) -> None:
        """Watch the file in the background."""
        self._task = asyncio.create_task(self.run(), name=f"watch {self.path}")

    async def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Poll the file's stamp until cancelled; reload it when it changes."""
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()

    async def check(self) -> bool:
        """Reload if the file changed since the last look; True when new settings were applied."""
        version = stamp(self.path)
        if version == self.stamp:
            return False
        self.stamp = version
        if version is None:
            # Editors that save by rename make the file vanish for a moment; keep what we have.
            logger.warning("%s: the file is gone; keeping the current queue settings", self.path)
            return False
        try:
            file = load_queue_yaml(self.path)
        except QueueYamlError as exc:
            logger.error("%s (keeping the previous queue settings)", exc)
            return False
        try:
            changes = await apply_queue_file(self.emulator, file)
        except Exception:
            logger.exception("%s: could not apply the new settings", self.path)
            return False
        self.reloads += 1
        logger.info("%s reloaded: %s", self.path, "; ".join(changes) or "no change")
        return True

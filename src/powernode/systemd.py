"""systemd's service protocol: readiness and watchdog notifications (sd_notify(3)).

A unit with ``Type=notify`` starts the process with ``$NOTIFY_SOCKET`` naming an
``AF_UNIX`` datagram socket (a path, or ``@name`` in the abstract namespace); the
service sends newline-separated ``KEY=VALUE`` assignments to it: ``READY=1`` once
it serves, ``STATUS=…`` for ``systemctl status``, ``STOPPING=1`` when it drains,
and ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` microseconds (systemd kills
and restarts a service that falls silent: ``WatchdogSec=``). ``$WATCHDOG_PID``,
when set, names the process the watchdog is for.

Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is a
no-op, so the same binary runs anywhere. Written here rather than taken from a
library: the protocol is one ``sendto`` (python-systemd needs libsystemd's headers
to build, sdnotify is unmaintained).

The watchdog is only as honest as what pings it: each process pings from the loop
whose liveness it vouches for (the API's event loop, the worker's poll loop, the
agent's service loop), never from a thread of its own that would keep pinging
while the real work is stuck.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op when the process was not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self.watchdog_interval = _watchdog_interval(env)
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines (``ready="1"`` → ``READY=1``); False if not sent."""
        if self._address is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in assignments.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # Never block the loop that pings: a receiver that does not read (its
                # queue holds net.unix.max_dgram_qlen datagrams, 10 by default) costs
                # a dropped message, not a stuck service.
                s.sendto(message, socket.MSG_DONTWAIT, self._address)
        except OSError as e:  # systemd gone, the socket removed, its queue full: never fatal
            log.warning("sd_notify to %r failed: %s", self._address, e)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(ready="1", **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping="1")

    def watchdog(self, *, now: float | None = None) -> bool:
        """Ping the watchdog if half its interval has passed since the last ping.

        Cheap to call from a hot loop: it sends at most twice per interval.
        """
        if self.watchdog_interval is None:
            return False
        t = time.monotonic() if now is None else now
        if t - self._last_ping < self.watchdog_interval / 2:
            return False
        self._last_ping = t
        return self.notify(watchdog="1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between required pings, or None when no watchdog is asked for this PID."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (our parent)
    return int(usec) / 1_000_000

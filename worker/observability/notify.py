"""sd_notify without libsystemd: one datagram per message to `$NOTIFY_SOCKET`.

A no-op when the variable is unset (not started by systemd with `Type=notify`), so the
runner calls it unconditionally. A leading `@` names an abstract-namespace socket.
Failures are logged once and never raised: a notification is never worth a crash, nor a
wait — sends never block.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger("ecs_worker.notify")


class SystemdNotifier:
    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True when it was sent."""
        if not self.address:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block: a listener that stopped reading must not stall the receive
                # loop that sends the watchdog pings (a full socket drops the message).
                self._sock.sendto(data, socket.MSG_DONTWAIT, self.address)
                return True
            except OSError as exc:
                if not self._warned:  # once: systemd restarting must not flood the journal
                    log.warning("sd_notify to %r failed: %s", self.address.replace("\0", "@"), exc)
                    self._warned = True
                return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects (half its timeout), or None if off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.01)
    except ValueError:
        return None

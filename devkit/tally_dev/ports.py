"""Local TCP ports: whether one is taken, and a free one."""

from __future__ import annotations

import socket


def in_use(host: str, port: int) -> bool:
    """Return whether something listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_port(host: str) -> int:
    """Return a port the system says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port

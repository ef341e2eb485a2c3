"""Start the Functions emulator's Python workers as forks of one process that imported their libraries.

The emulator starts every Python worker as a new `functions-framework` process, which imports
functions-framework, Flask, gunicorn, firebase-functions, firebase-admin and the Firestore client
(about 0.9 s of CPU) before it imports the functions' own code (about 0.2 s): 15 or more times in
a test run, 9 of them at once when the tests warm every function. The zygote imports those
libraries once; each worker is a fork of it that imports only the functions' code, in the
worker's own environment and folder, and then runs functions-framework exactly as its command does.

scripts/emulator-preload.cjs starts the zygote with the suite and has the emulator start
`worker_zygote.py client SOCKET` where it started `functions-framework`. The client hands the
zygote its environment, folder and standard streams, and lives as long as the worker: when the
emulator ends the client, the worker ends too; when the worker ends, the client exits with its
status. Without a live zygote, the client becomes `functions-framework` itself.

Usage:  python worker_zygote.py serve SOCKET       (the zygote; it ends when its stdin closes)
        python -S worker_zygote.py client SOCKET   (one worker, in the worker's environment)
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

# What every worker of Tally's functions imports before their own code; a module missing here is
# skipped (a worker then imports it itself).
LIBRARIES = (
    "functions_framework",
    "functions_framework._cli",
    "functions_framework._http.gunicorn",
    "click",
    "cloudevents.http",
    "gunicorn.app.base",
    "gunicorn.workers.gthread",
    "flask",
    "firebase_functions.core",
    "firebase_functions.firestore_fn",
    "firebase_functions.https_fn",
    "firebase_functions.logger",
    "firebase_functions.options",
    "firebase_functions.params",
    "firebase_functions.scheduler_fn",
    "firebase_admin",
    "firebase_admin.app_check",
    "firebase_admin.auth",
    "firebase_admin.exceptions",
    "google.cloud.firestore",
    "pydantic",
)
HEADER = struct.Struct("!I")  # the length of the request that follows the client's first message
STREAMS = (0, 1, 2)
ZYGOTE_PID = "TALLY_WORKER_ZYGOTE_PID"  # set by the preload for the client: the zygote to ask
WAIT_FOR_ZYGOTE = 60.0  # seconds a client waits for a live zygote to listen (it imports first)


# ---- the zygote ----


def preload(names: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Import the libraries every worker needs; return those that could not be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def end_with(stream: int, group: bool) -> None:
    """End this process, or its whole process group, once `stream` reaches its end."""

    def watch() -> None:
        while os.read(stream, 4096):
            pass
        if group:
            os.killpg(0, signal.SIGKILL)
        os._exit(0)

    threading.Thread(target=watch, name="end-with", daemon=True).start()


def receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Read a client's request (environment and folder) and its standard streams."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, len(STREAMS))
    try:
        if len(header) != HEADER.size or len(fds) != len(STREAMS):
            raise ConnectionError("a client sent no request header or not its three streams")
        (size,) = HEADER.unpack(header)
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ConnectionError("a client closed before its request ended")
            body += chunk
        request: dict[str, Any] = json.loads(body)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def become_worker(conn: socket.socket, request: Mapping[str, Any], fds: list[int]) -> None:
    """Turn this fork into the worker the client asked for: its streams, environment and folder."""
    worker = os.getpid()
    os.setpgid(0, 0)  # a group of its own: the worker and gunicorn's process end together
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in zip(STREAMS, fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = os.path.dirname(sys.executable)  # as for the functions-framework command
    end_with(conn.fileno(), group=True)  # the client ended: so does the worker
    from functions_framework import _function_registry
    from functions_framework._cli import _cli

    # functions-framework resolves its default source, ./main.py, when it is imported: here, in
    # the zygote's folder. Resolve it again in the worker's.
    _function_registry.DEFAULT_SOURCE = os.path.realpath("./main.py")

    status = 1
    try:
        _cli.main(args=[], prog_name="functions-framework")  # ends with SystemExit
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException:  # noqa: BLE001 - e.g. the functions' code does not import: say why, as the command does
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if os.getpid() == worker:  # not gunicorn's process, a fork of the worker, ending
            conn.sendall(bytes([status & 0xFF]))
        os._exit(status)


def serve(path: str) -> None:
    """Import the libraries, then fork a worker for every client that connects to `path`."""
    missing = preload()
    if missing:
        print(f"worker zygote: workers will import {', '.join(missing)} themselves", file=sys.stderr)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    end_with(sys.stdin.fileno(), group=False)  # the emulator that started the zygote ended
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(64)
    os.replace(path + ".new", path)  # a client that sees the path can connect
    while True:
        conn, _ = listener.accept()
        try:
            request, fds = receive(conn)
        except (OSError, ValueError) as error:
            print(f"worker zygote: a client's request was refused: {error}", file=sys.stderr)
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            try:
                become_worker(conn, request, fds)
            finally:
                os._exit(1)
        conn.close()
        for fd in fds:
            os.close(fd)


# ---- the client ----


def zygote_alive() -> bool:
    """Return whether the zygote the preload started is still running."""
    try:
        os.kill(int(os.environ.get(ZYGOTE_PID, "")), 0)
    except (ValueError, OSError):
        return False
    return True


def connect(path: str, wait: float = WAIT_FOR_ZYGOTE) -> socket.socket | None:
    """Connect to the zygote, waiting while it is alive and not listening yet; None if it is gone."""
    deadline = time.monotonic() + wait
    while zygote_alive():
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
    return None


def client(path: str) -> int:
    """Have the zygote start this worker; return the worker's exit status when it ends."""
    conn = connect(path)
    if conn is None:  # no zygote: be the worker the emulator asked for
        bin_dir = os.path.dirname(sys.executable)
        command = os.path.join(bin_dir, "functions-framework")
        os.execv(command, [command])  # noqa: S606 - the emulator's own worker command
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode("utf-8")
    socket.send_fds(conn, [HEADER.pack(len(body))], list(STREAMS))
    conn.sendall(body)
    last = b""
    while chunk := conn.recv(64):
        last = chunk
    return last[-1] if last else 1  # no status: the worker was killed


def main(argv: list[str]) -> int:
    """Run the zygote or a client."""
    if len(argv) != 2 or argv[0] not in ("serve", "client"):
        print(__doc__, file=sys.stderr)
        return 2
    role, path = argv
    if role == "serve":
        serve(path)
        return 0
    return client(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

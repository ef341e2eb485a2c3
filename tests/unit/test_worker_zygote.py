"""scripts/worker_zygote.py with real processes: the functions' virtualenv, a zygote, clients, HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tally_dev.ports import free_port, in_use

ROOT = Path(__file__).resolve().parents[2]
ZYGOTE = ROOT / "scripts" / "worker_zygote.py"
PYTHON = ROOT / "functions" / "venv" / "bin" / "python"
HOST = "127.0.0.1"
MAIN = """
import os

import functions_framework

print(f"main imported in {os.getpid()}", flush=True)


@functions_framework.http
def hello(request):
    print(f"serving {os.environ['GREETING']}", flush=True)
    return f"{os.environ['GREETING']} from {os.getpid()} in {os.getcwd()}"
"""

pytestmark = pytest.mark.skipif(not PYTHON.is_file(), reason="functions/venv (make setup) is needed")


def answer(port: int, timeout: float = 30.0) -> requests.Response:
    """GET the worker on `port` once it listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(f"http://{HOST}:{port}/", timeout=5)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "main.py").write_text(MAIN)
    return folder


def start_zygote(folder: Path) -> subprocess.Popen[bytes]:
    """Start a zygote as the preload does (its stdin a pipe from the emulator)."""
    return subprocess.Popen(  # noqa: S603 - fixed arguments
        [PYTHON, "-u", ZYGOTE, "serve", folder / "zygote.socket"], stdin=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def sockets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the module's zygote socket."""
    return tmp_path_factory.mktemp("zygote")


@pytest.fixture(scope="module")
def zygote(sockets: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One zygote for the module's workers."""
    process = start_zygote(sockets)
    yield process
    process.kill()
    process.wait()


Start = Callable[..., tuple[subprocess.Popen[str], int]]


@pytest.fixture
def start_worker(sockets: Path, functions_dir: Path) -> Iterator[Start]:
    """Start workers as the emulator does, each a client with the worker's environment and port."""
    started: list[subprocess.Popen[str]] = []

    def start(
        greeting: str, *, zygote_pid: int | None, target: str = "hello"
    ) -> tuple[subprocess.Popen[str], int]:
        port = free_port(HOST)
        env = {
            "PATH": os.environ["PATH"],
            "FUNCTION_TARGET": target,
            "FUNCTION_SIGNATURE_TYPE": "http",
            "HOST": HOST,
            "PORT": str(port),
            "GREETING": greeting,
        }
        if zygote_pid is not None:
            env["TALLY_WORKER_ZYGOTE_PID"] = str(zygote_pid)
        client = subprocess.Popen(  # noqa: S603 - fixed arguments
            [PYTHON, "-S", ZYGOTE, "client", sockets / "zygote.socket"],
            cwd=functions_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(client)
        return client, port

    yield start
    for client in started:
        client.kill()
        client.communicate()


def test_each_worker_is_a_fork_with_its_own_environment_folder_and_streams(
    zygote: subprocess.Popen[bytes], start_worker: Start, functions_dir: Path
) -> None:
    (first, first_port), (second, second_port) = (
        start_worker(greeting, zygote_pid=zygote.pid) for greeting in ("hello", "bonjour")
    )

    answers = [answer(first_port).text, answer(second_port).text]
    first.terminate()
    out, _ = first.communicate(timeout=10)

    shown = [re.fullmatch(r"(\w+) from (\d+) in (.+)", text) for text in answers]
    greetings, pids, folders = zip(*(match.groups() for match in shown if match), strict=True)
    assert greetings == ("hello", "bonjour")
    assert len(set(pids)) == 2
    assert not {str(zygote.pid), str(first.pid), str(second.pid)} & set(pids)
    assert folders == (str(functions_dir), str(functions_dir))
    assert "serving hello" in out  # the worker's output is the client's: the emulator logs it
    assert "main imported" in out


def test_a_worker_ends_with_its_client(zygote: subprocess.Popen[bytes], start_worker: Start) -> None:
    client, port = start_worker("hello", zygote_pid=zygote.pid)
    answer(port)

    client.kill()
    client.wait()

    deadline = time.monotonic() + 10
    while in_use(HOST, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not in_use(HOST, port)


def test_a_worker_that_cannot_start_says_why_and_its_client_exits_with_failure(
    zygote: subprocess.Popen[bytes], start_worker: Start
) -> None:
    client, _ = start_worker("hello", zygote_pid=zygote.pid, target="no_such_function")

    _, err = client.communicate(timeout=30)

    assert client.returncode != 0
    assert "no_such_function" in err


def test_without_a_zygote_the_client_is_the_functions_framework_command(start_worker: Start) -> None:
    client, port = start_worker("hola", zygote_pid=None)

    text = answer(port).text

    assert text.startswith("hola from ")
    assert Path(f"/proc/{client.pid}/cmdline").read_bytes().split(b"\0")[1].endswith(b"/functions-framework")


def test_the_zygote_ends_when_the_emulator_does(tmp_path: Path) -> None:
    zygote = start_zygote(tmp_path)
    assert zygote.stdin is not None

    zygote.stdin.close()

    assert zygote.wait(timeout=30) == 0

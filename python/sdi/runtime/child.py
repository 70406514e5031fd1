"""A server in a child process: started, waited for until it listens, stopped or killed.

:class:`ChildProcess` runs a command that prints one line containing
``listening on <scheme>://<host>:<port>`` once it serves (what every
``sdi serve`` and data node prints), keeps the end of what it prints, and
knows the port it reported. Subclasses say which command
(:meth:`ChildProcess.command`); ``sdi.testing.broker.ServiceProcess`` runs
``sdi serve <system>`` this way, and the object store runs its data nodes.

>>> import sys
>>> SERVER = (
...     "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
...     " print('listening on http://127.0.0.1:1234', flush=True); time.sleep(60)"
... )
>>> class Pretend(ChildProcess):
...     def command(self) -> list[str]:
...         return [sys.executable, "-c", SERVER]
>>> child = Pretend("a pretend server").start()
>>> child.port, child.stop()
(1234, 0)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from types import TracebackType
from typing import Self

__all__ = ["LISTENING", "ChildProcess"]

#: The line a server prints once it listens; group 1 is the host, group 2 the port.
LISTENING = re.compile(r"listening on \w+://([^:\s/]+):(\d+)")
#: Lines of output kept (the oldest are dropped past twice as many).
OUTPUT_LINES_KEPT = 2000


class ChildProcess:
    """One server process named ``name`` (for messages), on ``host``:``port`` (0: it picks).

    :meth:`start` returns once it listens (:attr:`port` is then the real
    one); :meth:`kill` is ``kill -9``; :meth:`stop` sends ``stop_signal``
    (a clean stop) and returns the exit status; :meth:`restart` starts it
    again on the same port. What it prints is kept in :attr:`output` (the
    last :data:`OUTPUT_LINES_KEPT` lines at least).
    """

    #: The signal :meth:`stop` sends.
    stop_signal: signal.Signals = signal.SIGTERM
    #: Seconds :meth:`start` and :meth:`stop` wait by default.
    timeout: float = 60.0

    def __init__(self, name: str, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.port = port
        self.host = host
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self._ready = threading.Event()
        self._listening = threading.Event()
        self._killed = False

    def command(self) -> list[str]:
        """The command line to run (it must print the listening line)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, timeout: float | None = None) -> Self:
        """Starts the process and returns once it listens."""
        return self.launch().wait_listening(timeout)

    def launch(self) -> Self:
        """Starts the process without waiting (members of a cluster start together)."""
        if self.running:
            raise RuntimeError(f"{self.name} is running already (pid {self.pid})")
        process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.process, self._killed = process, False
        ready, listening = threading.Event(), threading.Event()

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                if len(self.output) > 2 * OUTPUT_LINES_KEPT:
                    del self.output[:-OUTPUT_LINES_KEPT]
                if not ready.is_set() and (match := LISTENING.search(line)):
                    self.port = int(match.group(2))
                    listening.set()
                    ready.set()
            ready.set()  # the output ended: the process is exiting

        self._drain = threading.Thread(target=drain, name=f"{self.name}-output", daemon=True)
        self._drain.start()
        self._ready, self._listening = ready, listening
        return self

    def wait_listening(self, timeout: float | None = None) -> Self:
        """Waits until the launched process listens; RuntimeError with its output if it does not."""
        timeout = self.timeout if timeout is None else timeout
        process = self.process
        if process is None:
            raise RuntimeError(f"{self.name} was not launched: call launch() first")
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(self.failure(f"did not listen within {timeout} s"))
        if not self._listening.is_set() or process.poll() is not None:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(self.failure("closed its output but did not exit")) from None
            self._release()
            raise RuntimeError(self.failure(f"exited with status {process.returncode}"))
        return self

    def failure(self, what: str) -> str:
        """A message saying the process ``what``, with the end of what it printed."""
        return f"{self.name} {what}; it printed:\n" + "".join(self.output[-40:])

    def kill(self) -> None:
        """Kills the process with SIGKILL (a crash) and waits for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self._killed = True
        if self.process is not None:
            self.process.wait()
        self._release()

    def stop(self, timeout: float | None = None) -> int:
        """Stops the process with :attr:`stop_signal` (work in flight finishes); its exit status."""
        timeout = self.timeout if timeout is None else timeout
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(self.failure(f"did not stop within {timeout} s")) from None
        self.process.wait()
        self._release()
        return self.process.returncode

    def restart(self, timeout: float | None = None) -> Self:
        """Starts the process again (stopping it first if it runs) on the same port."""
        if self.running:
            self.stop(timeout)
        return self.start(timeout)

    def _release(self) -> None:
        """Closes the pipe of a process that has exited, once all it printed is read."""
        if self.process is None or self.process.poll() is None:
            return
        if self._drain is not None:
            self._drain.join(10)
            self._drain = None
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        killed = self._killed
        status = self.stop()
        if status != 0 and not killed and exc_type is None:
            raise RuntimeError(self.failure(f"exited with status {status}"))

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"{type(self).__name__}({self.name!r}, {self.host}:{self.port}, {state})"

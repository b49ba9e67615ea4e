"""A local Spark standalone cluster on 127.0.0.1, for trying the Spark recipe, the
real-cluster test and the Spark benchmark.

:class:`LocalCluster` starts a master and ``workers`` workers (``cores`` each) from the
installed pyspark's ``spark-class`` (``SPARK_HOME`` set to the pyspark package unless the
environment gives one), waits until the master lists every worker alive, and stops
exactly the processes it started, whatever happens (also when the start fails)::

    with LocalCluster(Path("/tmp/cluster"), workers=2, memory="4g") as cluster:
        # spark-submit --master cluster.url ...  or  churnlens score --master cluster.url
        print(cluster.status()["completedapps"])

Each daemon's output goes to ``<folder>/<name>.log``; the workers' application folders
are ``<folder>/work<i>``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any


def spark_home() -> str:
    """``SPARK_HOME``, or the installed pyspark package (whose ``bin/`` has the scripts)."""
    found = os.environ.get("SPARK_HOME")
    if found:
        return found
    import pyspark

    return str(Path(pyspark.__file__).parent)


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 now (all held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(what: str, check: Callable[[], Any], seconds: float = 90) -> Any:
    """Poll ``check`` every half second until it returns something true, and return it;
    a master not listening yet, or answering with an empty page while it starts, counts
    as not yet. Raises :class:`TimeoutError` naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
            if found:
                return found
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local cluster did not get there in {seconds:.0f} s: {what}")
        time.sleep(0.5)


class LocalCluster:
    """A standalone master and its workers on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        workers: int = 1,
        cores: int = 1,
        memory: str = "1g",
        env: Mapping[str, str] | None = None,
        seconds: float = 90,
    ) -> None:
        self.env = {"SPARK_HOME": spark_home(), "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
        self.processes: list[subprocess.Popen] = []
        self.logs: list[IO[str]] = []
        port, self.webui, *ports = free_ports(2 + 2 * workers)
        self.url = f"spark://127.0.0.1:{port}"
        spark_class = str(Path(self.env["SPARK_HOME"]) / "bin" / "spark-class")
        try:
            self._start(
                folder, "master",
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(self.webui)],
            )  # fmt: skip
            wait_for("the master's web UI", self.status, seconds)
            for i in range(workers):
                self._start(
                    folder, f"worker{i}",
                    [spark_class, "org.apache.spark.deploy.worker.Worker", self.url, "--host",
                     "127.0.0.1", "--port", str(ports[2 * i]), "--webui-port",
                     str(ports[2 * i + 1]), "--cores", str(cores), "--memory", memory,
                     "--work-dir", str(folder / f"work{i}")],
                )  # fmt: skip
            alive = f"{workers} alive worker(s)"
            wait_for(alive, lambda: self.status().get("aliveworkers") == workers, seconds)
        except BaseException:  # never leave the JVMs started so far running
            self.stop()
            raise

    def _start(self, folder: Path, name: str, command: list[str]) -> None:
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        env = {**os.environ, **self.env}
        self.processes.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    def status(self) -> dict[str, Any]:
        """The master's JSON status (workers, active and completed applications)."""
        url = f"http://127.0.0.1:{self.webui}/json"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        """Stop the daemons this cluster started, newest first, and close their logs."""
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()
        self.processes, self.logs = [], []

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["LocalCluster", "free_ports", "spark_home", "wait_for"]

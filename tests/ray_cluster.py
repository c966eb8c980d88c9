"""A real multi-node Ray cluster on this machine, for tests: a head and worker nodes, each a
``ray start --block`` process with its own raylet, ports and resources.

Every port is picked free (other Rays run on this machine at the same time), and teardown kills
only the processes these ``ray start`` calls spawned, by pid (``ray stop`` would kill every Ray of
this user). The nodes get ``PYTHONPATH=<repo root>`` so their workers import ``engine`` and
``pipelines`` the way an installed package would be imported on a real cluster.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
WORKER_PORTS = 40  # worker processes per node: a few actors plus Ray Data's helpers, with room to spare
NODE_IP = "127.0.0.1"  # every node on the loopback: nothing of the test cluster is reachable from outside
START_TIMEOUT_S = 60.0  # a node registers in ~5 s on an idle 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n: int) -> int:
    """The first of ``n`` consecutive ports that are free now (workers take ports from a range)."""
    for _ in range(100):
        first = free_port()
        if first + n >= 65535:
            continue
        try:
            sockets = []
            for port in range(first, first + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclass
class RayNode:
    """One ``ray start --block`` process and what it started."""

    name: str  # the custom resource that marks this node (head_node, worker_node, ...)
    process: subprocess.Popen
    node_manager_port: int
    log: str  # the `ray start` output

    def processes(self) -> list[psutil.Process]:
        """The `ray start` process and every process below it (raylet, agents, workers)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def tail(self) -> str:
        with open(self.log) as f:
            return f.read()[-3000:]

    def raylet(self) -> psutil.Process:
        for p in self.processes():
            with_name = p.name()
            if with_name == "raylet" or with_name.startswith("raylet"):
                return p
        raise RuntimeError(f"{self.name}: no raylet process")


@dataclass
class LocalCluster:
    """A head node and worker nodes on 127.0.0.1. Use as a context manager."""

    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="zr"))  # short: socket paths
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0  # the head's dashboard (Ray's job server), when started with one

    @property
    def dashboard_url(self) -> str:
        return f"http://{NODE_IP}:{self.dashboard_port}"

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.gcs_port}"

    def env(self, code: bool = True) -> dict:
        """The environment of the nodes (``code``: with this checkout on PYTHONPATH)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return {
            **env,
            **({"PYTHONPATH": REPO} if code else {}),
            "RAY_USAGE_STATS_ENABLED": "0",
            # `ray start` turns token authentication on by default since Ray 2.5x; a throw-away cluster
            # on 127.0.0.1 needs none (a real cluster hands its drivers RAY_AUTH_TOKEN instead).
            "RAY_AUTH_MODE": "disabled",
        }

    def _start(
        self, name: str, num_cpus: int, head: bool, code: bool = True, dashboard: bool = False
    ) -> RayNode:
        nm_port, workers, dashboard_port = free_port(), free_port_range(WORKER_PORTS), free_port()
        args = [
            RAY,
            "start",
            "--block",
            f"--num-cpus={num_cpus}",
            f'--resources={{"{name}": 1}}',
            f"--node-ip-address={NODE_IP}",
            f"--node-manager-port={nm_port}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-port={dashboard_port}",  # the head's dashboard process starts even when disabled
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + WORKER_PORTS - 1}",
            "--object-store-memory=200000000",  # 200 MB: shard summaries only, leaves RAM to decoders
            "--disable-usage-stats",
        ]
        if head:
            self.gcs_port = free_port()
            args += [
                "--head",
                f"--port={self.gcs_port}",
                # The dashboard is Ray's job server (`ray job submit`), on the loopback only.
                f"--include-dashboard={'true' if dashboard else 'false'}",
                f"--dashboard-host={NODE_IP}",
                f"--temp-dir={self.temp_dir}",
            ]
            self.dashboard_port = dashboard_port if dashboard else 0
        else:
            args += [f"--address={self.address}"]
        log = os.path.join(self.temp_dir, f"{name}.log")
        with open(log, "w") as out:
            process = subprocess.Popen(
                args, env=self.env(code), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        node = RayNode(name, process, nm_port, log)
        self.nodes.append(node)
        self._wait_for(node)
        return node

    def _wait_for(self, node: RayNode) -> None:
        """Wait until the node's resource shows up in the cluster (asks the GCS via `ray status`)."""
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start {node.name} exited:\n{node.tail()}")
            status = subprocess.run(
                [RAY, "status", f"--address={self.address}"], env=self.env(), capture_output=True, text=True
            )
            if f" {node.name}" in status.stdout:
                return
            time.sleep(1.0)
        raise RuntimeError(f"{node.name} did not join in {START_TIMEOUT_S} s:\n{node.tail()}")

    def worker_logs(self) -> int:
        """How many worker processes the cluster's raylets have started so far (one log each)."""
        return len(glob.glob(f"{self.temp_dir}/session_latest/logs/worker-*.out"))

    def start_head(self, num_cpus: int = 1, dashboard: bool = False) -> RayNode:
        """Start the head (``dashboard``: with Ray's job server, for ``ray job submit``)."""
        return self._start("head_node", num_cpus, head=True, dashboard=dashboard)

    def add_worker(self, name: str = "worker_node", num_cpus: int = 1, code: bool = True) -> RayNode:
        """Start a worker node (``code=False``: without this checkout on its PYTHONPATH)."""
        return self._start(name, num_cpus, head=False, code=code)

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL a node's raylet and everything under its `ray start`, as a lost machine would go."""
        for p in node.processes():
            _kill(p)
        node.process.wait(timeout=30)

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # workers first, so none of them reconnects
            for p in node.processes():
                _kill(p)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=30)
        # Processes that left the process tree (reparented workers) still name our session dir.
        for p in psutil.process_iter(["cmdline"]):
            if any(self.temp_dir in arg for arg in p.info["cmdline"] or ()):
                _kill(p)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _kill(p: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        p.send_signal(signal.SIGKILL)


@dataclass
class PoisonStage:
    """A test image stage standing in for a third-party decoder that breaks on one file.

    On a batch with a caption containing ``EXIT_WORD`` it kills its worker process (as a segfault in
    native code would); on ``RAISE_WORD`` it raises. Both only while ``armed_file`` exists, so a
    test can "fix the decoder" and rerun. Writes the ``safety`` table with null scores (the
    table's value for an image a scorer could not read) so the shard layout stays the real one.
    """

    armed_file: str
    name: str = "poison"
    table: str = "safety"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "caption")
    writes: tuple[str, ...] = ("nsfw_score",)
    schema: object = None  # schema.SAFETY, set in __post_init__ (this field shadows the module here)
    required: bool = False

    EXIT_WORD = "poison-exit"
    RAISE_WORD = "poison-raise"

    def __post_init__(self) -> None:
        from engine import schema

        self.schema = schema.SAFETY

    def setup(self) -> None:
        pass

    def __call__(self, batch):
        import pyarrow as pa

        armed = os.path.exists(self.armed_file)
        for image_id, caption in zip(
            batch["image_id"].to_pylist(), batch["caption"].to_pylist(), strict=True
        ):
            if armed and self.EXIT_WORD in caption:
                os._exit(70)  # no cleanup, no exception: the process is simply gone
            if armed and self.RAISE_WORD in caption:
                raise ValueError(f"cannot decode {image_id}")
        nulls = pa.nulls(batch.num_rows, pa.float32())
        return pa.table(
            {"sample_id": batch["sample_id"], "image_id": batch["image_id"], "nsfw_score": nulls},
            schema=self.schema,
        )

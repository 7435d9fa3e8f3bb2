"""Each node's command and environment in a distributed run: one pure function.

:func:`node_plan` is the single home of every framework's contract; the
local executor and the Kubernetes export both call it, so a rank sees the same
variables wherever it runs. Nothing here touches the engine or the file system.

A *node* is one container (one pod on Kubernetes). ``hosts[i]`` is the name
node ``i`` is reached by: the container name on the run's network locally
(:func:`node_names`, derived from the run id), ``<job>-<i>.<service>`` on
Kubernetes.

PyTorch (:class:`~envbuild.run.config.PyTorch`)
    Every node runs torch's launcher, ``torchrun`` (torch >= 1.10) or
    ``python -m torch.distributed.launch`` (``launcher="launch"``, torch 1.6),
    with ``--nnodes N --nproc_per_node M --node_rank i --master_addr HOST0
    --master_port 29500`` (``torchrun`` also ``--rdzv_conf=timeout=T``, the
    rendezvous timeout in whole seconds: its static rendezvous' own join
    timeout; torch 1.6's launcher has none). Each node's environment holds ``MASTER_ADDR``,
    ``MASTER_PORT``, ``WORLD_SIZE`` (N*M), ``NODE_RANK``, ``LOCAL_WORLD_SIZE``
    (M) and ``ENVBUILD_TORCH_BACKEND``. The launcher sets ``RANK`` and
    ``LOCAL_RANK`` for each process it starts (and ``WORLD_SIZE``,
    ``MASTER_ADDR``/``PORT`` again, to the same values); ``launch`` also
    passes ``--local_rank=K`` to the script, as torch documents. With a
    ``rank_shim`` (the local executor's :data:`RANK_SHIM`), the launcher
    starts the shim with the script as its first argument: it runs the script
    in the same process and reports the rank's exit code, which torch's
    launchers do not pass on.
MPI (:class:`~envbuild.run.config.Mpi`)
    Node 0 runs ``mpirun -np N*M --host HOST0:M,HOST1:M,...`` over ssh (port
    :data:`SSH_PORT`, the run's key under :data:`SSH_DIR`, TCP on
    :data:`MPI_INTERFACE`; ``--allow-run-as-root`` when the ranks run as root)
    and forwards the run's and the image's variables with ``-x`` (a rank
    started through ssh gets only sshd's environment otherwise: no venv on
    PATH). ssh retries the connection once a second for the rendezvous
    timeout, so the launcher may start before the workers' sshd listens. The
    other nodes run ``sshd`` in the foreground: as the ranks' user, which
    needs nothing when it is not root; as root, sshd needs its privilege
    separation folder (``/run/sshd``, made first) and ``SYS_CHROOT``
    (:data:`SSHD_ROOT_CAPABILITIES`, given back to that node only). Open MPI
    sets ``OMPI_COMM_WORLD_*`` for each rank. ``--tag-output`` starts each
    line of a rank's output with ``[JOBID,RANK]<stdout>:`` (``<stderr>:``):
    the local executor shows it as ``[NODE/RANK]``, where ``--host
    HOST0:M,...`` places rank R on node R // M (Open MPI fills each host's
    slots in order).
TensorFlow (:class:`~envbuild.run.config.TensorFlow`)
    One task per node: workers first, then parameter servers. Each runs the
    script with ``TF_CONFIG`` = ``{"cluster": {"worker": [...], "ps": [...]},
    "task": {"type": ..., "index": ...}}`` (addresses ``HOST:2222``); there is
    no separate chief task: worker 0 is the chief, as TensorFlow assumes when
    the cluster names none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envbuild.run.config import Distribution, Mpi, PyTorch, TensorFlow

MASTER_PORT = 29500  # torch's customary rendezvous port on node 0
TF_PORT = 2222  # each TensorFlow task's gRPC server
SSH_PORT = 2222  # the user-level sshd of MPI nodes (no root needed to bind it)
# The run's ssh key, mounted read-only (never in the image), with the file names
# Kubeflow's MPIJob mounts its generated key under (sshAuthMountPath). The
# private key is also the worker sshd's host key: one key per run, nothing else.
SSH_DIR = "/run/envbuild/ssh"
SSH_KEY = f"{SSH_DIR}/id_rsa"
SSH_AUTHORIZED_KEYS = f"{SSH_DIR}/authorized_keys"
MPI_INTERFACE = "eth0"  # the run network's interface in each container
# Where the local executor mounts envbuild/run/rank.py (read-only) in a PyTorch node.
RANK_SHIM = "/run/envbuild/rank.py"
# What a root sshd needs that reduced privileges drop: its pre-authentication
# child chroots into its privilege separation folder (OpenSSH 9: not optional).
SSHD_ROOT_CAPABILITIES = ("SYS_CHROOT",)
SSHD_PRIVSEP_DIR = "/run/sshd"


@dataclass(frozen=True)
class NodePlan:
    """One node of a distributed run: its role, address, argv and environment.

    ``environment`` holds only the variables the distribution adds; the run's
    own variables (``-e``, the image's) come on top of them unchanged.
    """

    index: int | str  # a str only for a template (see node_plan)
    role: str  # pytorch: master|worker; mpi: launcher|worker; tensorflow: chief|worker|ps
    host: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    # Capabilities the node needs back from the reduced set (an MPI worker's root sshd).
    capabilities: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """This node in ``--dry-run --json`` (values shown: envbuild computes them)."""
        return {
            "index": self.index,
            "role": self.role,
            "host": self.host,
            "argv": list(self.argv),
            "environment": dict(self.environment),
            "capabilities": list(self.capabilities),
        }


def node_count(distribution: Distribution) -> int:
    """How many containers (pods) ``distribution`` runs on."""
    if isinstance(distribution, TensorFlow):
        return distribution.workers + distribution.parameter_servers
    return distribution.nodes


def world_size(distribution: Distribution) -> int:
    """How many processes (ranks, or TensorFlow tasks) the job has in all."""
    if isinstance(distribution, TensorFlow):
        return node_count(distribution)
    return distribution.nodes * distribution.processes_per_node


def node_names(base: str, count: int) -> tuple[str, ...]:
    """The containers of a run named ``base`` (``envbuild-<run id>``): ``base-0``, ``base-1``..."""
    return tuple(f"{base}-{i}" for i in range(count))


def is_root(user: str) -> bool:
    """Whether ``user`` (``uid[:gid]`` or a name) is root."""
    name = user.partition(":")[0]
    return name in ("0", "root")


def node_plan(
    distribution: Distribution,
    hosts: Sequence[str] | None,
    argv: Sequence[str],
    index: int | str,
    *,
    root: bool,
    forward: Sequence[str] = (),
    rank_shim: str | None = None,
) -> NodePlan:
    """Node ``index``'s role, argv and environment.

    Args:
        distribution: the job, already checked.
        hosts: every node's address, node 0 first (``len == node_count``).
            ``None`` only for MPI under an operator that writes the host file
            itself (Kubeflow's MPIJob): ``mpirun`` then gets no ``--host``.
        argv: what one rank runs (``python /workspace/train.py ARGS``).
        index: the node; a string (``"$(NODE_RANK)"``) makes a PyTorch template
            for a node whose rank is known only where it runs (an Indexed Job).
        root: whether the ranks run as root (``mpirun --allow-run-as-root``).
        forward: variable names ``mpirun`` passes on to every rank (``-x``).
        rank_shim: PyTorch only: the container path of a Python shim the
            launcher starts in front of a Python script (see :data:`RANK_SHIM`).
    """
    if isinstance(distribution, PyTorch):
        return _pytorch(distribution, _hosts(hosts, distribution), argv, index, rank_shim)
    if isinstance(index, str):
        raise ValueError("only a PyTorch node can be a template")
    if isinstance(distribution, Mpi):
        return _mpi(distribution, hosts, argv, index, root=root, forward=forward)
    return _tensorflow(distribution, _hosts(hosts, distribution), argv, index)


def node_plans(
    distribution: Distribution,
    hosts: Sequence[str],
    argv: Sequence[str],
    *,
    root: bool,
    forward: Sequence[str] = (),
    rank_shim: str | None = None,
) -> tuple[NodePlan, ...]:
    """Every node of the job, node 0 first (see :func:`node_plan`)."""
    return tuple(
        node_plan(distribution, hosts, argv, i, root=root, forward=forward, rank_shim=rank_shim)
        for i in range(node_count(distribution))
    )


def tf_config(distribution: TensorFlow, hosts: Sequence[str], index: int) -> str:
    """Node ``index``'s ``TF_CONFIG`` (compact JSON, keys sorted)."""
    workers = [f"{h}:{TF_PORT}" for h in hosts[: distribution.workers]]
    servers = [f"{h}:{TF_PORT}" for h in hosts[distribution.workers :]]
    cluster: dict[str, list[str]] = {"worker": workers}
    if servers:
        cluster["ps"] = servers
    if index < distribution.workers:
        task = {"type": "worker", "index": index}
    else:
        task = {"type": "ps", "index": index - distribution.workers}
    return json.dumps({"cluster": cluster, "task": task}, sort_keys=True, separators=(",", ":"))


def _hosts(hosts: Sequence[str] | None, distribution: Distribution) -> Sequence[str]:
    if hosts is None or len(hosts) != node_count(distribution):
        raise ValueError(f"expected {node_count(distribution)} hosts, got {hosts!r}")
    return hosts


def _split_python(argv: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    """``(is a python script, what the launcher runs)``: a launcher adds ``python`` itself."""
    if len(argv) >= 2 and argv[0] == "python":
        return True, tuple(argv[1:])
    return False, tuple(argv)


def _pytorch(
    distribution: PyTorch,
    hosts: Sequence[str],
    argv: Sequence[str],
    index: int | str,
    rank_shim: str | None,
) -> NodePlan:
    nodes, per_node = distribution.nodes, distribution.processes_per_node
    python, script = _split_python(argv)
    if python and rank_shim is not None:
        script = (rank_shim, *script)
    no_python: tuple[str, ...]
    if distribution.launcher == "launch":
        launcher: tuple[str, ...] = ("python", "-m", "torch.distributed.launch")
        # torch 1.6's launch refuses --no_python without --use_env (no --local_rank then).
        no_python = ("--no_python", "--use_env")
        own_timeout: tuple[str, ...] = ()  # it has none: the executor's deadline only
    else:
        launcher, no_python = ("torchrun",), ("--no-python",)
        # The static rendezvous' join timeout (torch's default: 600 s), whole seconds.
        own_timeout = (f"--rdzv_conf=timeout={math.ceil(distribution.rendezvous_timeout)}",)
    command = (
        *launcher,
        f"--nnodes={nodes}",
        f"--nproc_per_node={per_node}",
        f"--node_rank={index}",
        f"--master_addr={hosts[0]}",
        f"--master_port={MASTER_PORT}",
        *own_timeout,
        *(() if python else no_python),
        *script,
    )
    environment = (
        ("MASTER_ADDR", hosts[0]),
        ("MASTER_PORT", str(MASTER_PORT)),
        ("WORLD_SIZE", str(nodes * per_node)),
        ("NODE_RANK", str(index)),
        ("LOCAL_WORLD_SIZE", str(per_node)),
        ("ENVBUILD_TORCH_BACKEND", distribution.backend),
    )
    role = "master" if index in (0, "0") else "worker"
    host = hosts[index] if isinstance(index, int) else f"{index}"
    return NodePlan(index, role, host, command, environment)


def _mpi(
    distribution: Mpi,
    hosts: Sequence[str] | None,
    argv: Sequence[str],
    index: int,
    *,
    root: bool,
    forward: Sequence[str],
) -> NodePlan:
    per_node = distribution.processes_per_node
    environment = (("ENVBUILD_NODE_RANK", str(index)),)
    if index > 0:
        sshd: tuple[str, ...] = (
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-p",
            str(SSH_PORT),
            "-h",
            SSH_KEY,
            "-o",
            f"AuthorizedKeysFile={SSH_AUTHORIZED_KEYS}",
            "-o",
            "UsePAM=no",
            "-o",
            "StrictModes=no",  # the key folder is a read-only mount from the host
            "-o",
            "PidFile=/tmp/envbuild-sshd.pid",
        )
        capabilities: tuple[str, ...] = ()
        if root:
            make = f'mkdir -p {SSHD_PRIVSEP_DIR} && exec "$@"'
            sshd = ("sh", "-c", make, "envbuild-sshd", *sshd)
            capabilities = SSHD_ROOT_CAPABILITIES
        host = hosts[index] if hosts is not None else f"worker-{index}"
        return NodePlan(index, "worker", host, sshd, environment, capabilities)
    # ssh waits 1 s between attempts: together about the rendezvous timeout.
    attempts = max(1, math.ceil(distribution.rendezvous_timeout))
    rsh = (
        f"-p {SSH_PORT} -i {SSH_KEY} -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectionAttempts={attempts}"
    )
    # --tag-output: each rank's line starts "[JOBID,RANK]<stdout>:", so a reader can file it.
    command: list[str] = ["mpirun", "-np", str(distribution.nodes * per_node), "--tag-output"]
    if hosts is not None:
        command += ["--host", ",".join(f"{h}:{per_node}" for h in hosts)]
    command += [
        "--mca",
        "btl_tcp_if_include",
        MPI_INTERFACE,
        "--mca",
        "oob_tcp_if_include",
        MPI_INTERFACE,
        "--mca",
        "plm_rsh_args",
        rsh,
    ]
    if root:
        command.append("--allow-run-as-root")
    for name in forward:
        command += ["-x", name]
    command += argv
    host = hosts[0] if hosts is not None else "launcher"
    return NodePlan(index, "launcher", host, tuple(command), environment)


def _tensorflow(
    distribution: TensorFlow, hosts: Sequence[str], argv: Sequence[str], index: int
) -> NodePlan:
    role = "ps" if index >= distribution.workers else "chief" if index == 0 else "worker"
    environment = (("TF_CONFIG", tf_config(distribution, hosts, index)),)
    return NodePlan(index, role, hosts[index], tuple(argv), environment)

"""A distributed run plan as Kubernetes manifests (``envbuild export kubernetes``).

The second executor of a :class:`~envbuild.run.planning.RunPlan`: instead of
starting containers it writes what a cluster needs to run the same job. Each
node's command and environment come from
:func:`envbuild.run.distributed.node_plan`, the function the local executor
uses, so a rank sees the same contract on both.

* PyTorch and TensorFlow: an Indexed Job (``completionMode: Indexed``, one pod
  per node, ``completions`` = ``parallelism`` = nodes) whose pods are
  ``<job>-<i>.<job>`` through a headless Service (``subdomain``,
  ``publishNotReadyAddresses`` so that names resolve before the rendezvous).
  A pod's node rank is its completion index: ``NODE_RANK`` comes from the
  ``batch.kubernetes.io/job-completion-index`` annotation (downward API), and
  the launcher's ``--node_rank=$(NODE_RANK)`` is expanded by Kubernetes. A
  TensorFlow task picks its ``TF_CONFIG`` from ``TF_CONFIG_<index>`` by
  ``JOB_COMPLETION_INDEX``, which Kubernetes sets in Indexed Jobs.
* MPI: a Kubeflow ``MPIJob`` (``kubeflow.org/v2beta1``): a launcher running
  ``mpirun`` on the host file the operator writes, ``nodes`` workers running
  the user-level sshd; the operator generates the job's ssh key as a Secret and
  mounts it at ``sshAuthMountPath`` (:data:`~envbuild.run.distributed.SSH_DIR`).
* GPUs are ``nvidia.com/gpu`` limits (a count only: ``all`` and device IDs
  mean nothing on a cluster); ``/dev/shm`` is a memory-backed ``emptyDir`` of
  the run's shm size; inputs and outputs are volumes the user names
  (``pvc:CLAIM[/sub/path]``); the image is referenced by digest.

What cannot be expressed (a host path, a ``download`` input, a bind mount,
``--gpus all``, a user by name, a snapshot run) is a :class:`~envbuild.errors.RunConfigError`
naming it, never silently dropped. Pure: no engine, no file system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envbuild.errors import RunConfigError
from envbuild.run.config import (
    INPUTS_ROOT,
    OUTPUTS_ROOT,
    RUN_LABEL,
    Distribution,
    Mpi,
    PyTorch,
    TensorFlow,
    parse_shm_size,
)
from envbuild.run.distributed import (
    MASTER_PORT,
    SSH_DIR,
    TF_PORT,
    NodePlan,
    is_root,
    node_count,
    node_plan,
)

if TYPE_CHECKING:
    from envbuild.run.planning import RunPlan

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MPIJOB_API = "kubeflow.org/v2beta1"
CONTAINER = "node"  # the one container of each pod
PVC_PREFIX = "pvc:"
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,48}[a-z0-9])?")  # <job>-<index> must stay a label
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_DIGEST_REF = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Volume:
    """An input or output mapped to a PersistentVolumeClaim (``pvc:CLAIM[/sub/path]``)."""

    name: str  # the input or output name
    claim: str
    sub_path: str  # "" for the claim's root
    target: str  # /inputs/NAME or /outputs/NAME
    read_only: bool


def parse_volume(text: str, *, what: str, name: str, read_only: bool) -> Volume:
    """``pvc:CLAIM[/sub/path]`` for input or output ``name``; anything else is an error."""
    root = INPUTS_ROOT if read_only else OUTPUTS_ROOT
    if not text.startswith(PVC_PREFIX):
        raise RunConfigError(
            f"{what} {name}={text}: a host path cannot be expressed in Kubernetes",
            hint=f"name a volume claim instead: {what} {name}=pvc:CLAIM[/sub/path]",
        )
    claim, _, sub_path = text[len(PVC_PREFIX) :].partition("/")
    sub_path = sub_path.strip("/")
    if not _CLAIM.fullmatch(claim) or ".." in sub_path.split("/") or "\x00" in sub_path:
        raise RunConfigError(
            f"{what} {name}={text}: expected pvc:CLAIM[/sub/path] with a claim name "
            "of lowercase letters, digits, '-' and '.', and a path without '..'",
            hint=f"e.g. {what} {name}=pvc:datasets/mnist",
        )
    return Volume(name, claim, sub_path, f"{root}/{name}", read_only)


def check_job_name(name: str) -> str:
    """``name`` if a Job, its pods' host names and a Service can all carry it."""
    if not _DNS_LABEL.fullmatch(name):
        raise RunConfigError(
            f"--name {name!r}: not a Kubernetes job name",
            hint="lowercase letters, digits and '-', starting with a letter, at most 50",
        )
    return name


def check_image_ref(ref: str) -> str:
    """``ref`` if it names an image by digest (``REPO@sha256:...``)."""
    if not _DIGEST_REF.fullmatch(ref):
        raise RunConfigError(
            f"image {ref!r}: a cluster needs the image by registry digest (REPO@sha256:...)",
            hint="push it with envbuild push --registry HOST (or envbuild build --push), "
            "or give --image-ref REPO@sha256:...",
        )
    return ref


def manifests(
    the_plan: RunPlan, *, name: str, image_ref: str, volumes: Sequence[Volume] = ()
) -> list[dict[str, Any]]:
    """The Kubernetes objects that run ``the_plan`` as job ``name`` on image ``image_ref``."""
    distribution = the_plan.config.distribution
    if distribution is None:
        raise RunConfigError(
            "envbuild export kubernetes writes distributed jobs",
            hint="add --distribution mpi|pytorch|tensorflow --nodes N",
        )
    check_job_name(name)
    check_image_ref(image_ref)
    if the_plan.mounts and any(m is not the_plan.source for m in the_plan.mounts):
        raise RunConfigError(
            "--mount, and inputs or outputs on host paths, cannot be expressed in Kubernetes",
            hint="map inputs and outputs to volume claims: --input NAME=pvc:CLAIM[/path]",
        )
    if the_plan.downloads:
        raise RunConfigError("a download input cannot be expressed in Kubernetes: use pvc:CLAIM")
    if the_plan.run_files is not None:
        option = "--azureml-context" if the_plan.run_files.azureml_context else "--snapshot"
        raise RunConfigError(
            f"{option} cannot be expressed in Kubernetes: the run's kept files, logs and "
            "metrics live on this machine",
            hint="leave it out (the job image's copy of the source is writable) and keep "
            "results on a volume claim: --output NAME=pvc:CLAIM[/path]",
        )
    if isinstance(distribution, Mpi):
        return [_mpijob(the_plan, distribution, name, image_ref, volumes)]
    return [
        _service(name, distribution),
        _indexed_job(the_plan, distribution, name, image_ref, volumes),
    ]


def _labels(name: str) -> dict[str, str]:
    return {RUN_LABEL: name, "app.kubernetes.io/managed-by": "envbuild"}


def _service(name: str, distribution: Distribution) -> dict[str, Any]:
    port = MASTER_PORT if isinstance(distribution, PyTorch) else TF_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: name},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }


def _quantity(size: int) -> str:
    for suffix, power in (("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if size % (1 << power) == 0:
            return f"{size >> power}{suffix}"
    return str(size)


def _resources(the_plan: RunPlan) -> dict[str, Any]:
    gpus = the_plan.gpus
    if gpus is None:
        return {}
    if gpus.device_ids or gpus.count is None or gpus.count < 1:
        raise RunConfigError(
            "--gpus: a cluster schedules GPUs by count only",
            hint="e.g. --gpus 2 (each node gets that many nvidia.com/gpu)",
        )
    return {"resources": {"limits": {"nvidia.com/gpu": gpus.count}}}


def _security(the_plan: RunPlan) -> dict[str, Any]:
    uid, _, gid = the_plan.user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise RunConfigError(
            f"--user {the_plan.user}: Kubernetes runs as a numeric uid[:gid]",
            hint="e.g. --user 1000:1000",
        )
    context: dict[str, Any] = {"runAsUser": int(uid)}
    if gid:
        context["runAsGroup"] = int(gid)
    return context


def _container(
    the_plan: RunPlan,
    argv: Sequence[str],
    image_ref: str,
    volumes: Sequence[Volume],
    env: Sequence[dict[str, Any]],
    *,
    name: str = CONTAINER,
    gpus: bool = True,
    keep: Sequence[str] = (),
) -> dict[str, Any]:
    drop = [c for c in the_plan.cap_drop if c not in keep]
    container: dict[str, Any] = {
        "name": name,
        "image": image_ref,
        "command": list(argv),
        "workingDir": the_plan.workdir,
        "env": list(env),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            *(
                {
                    "name": f"{'in' if v.read_only else 'out'}-{v.name}".lower().replace("_", "-"),
                    "mountPath": v.target,
                    "readOnly": v.read_only,
                    **({"subPath": v.sub_path} if v.sub_path else {}),
                }
                for v in volumes
            ),
        ],
        "securityContext": {
            "allowPrivilegeEscalation": not the_plan.no_new_privileges,
            **({"capabilities": {"drop": drop}} if drop else {}),
        },
    }
    if gpus:
        container.update(_resources(the_plan))
    return container


def _pod_spec(
    the_plan: RunPlan, containers: list[dict[str, Any]], volumes: Sequence[Volume]
) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "securityContext": _security(the_plan),
        "containers": containers,
        "volumes": [
            {
                "name": "dshm",
                "emptyDir": {
                    "medium": "Memory",
                    "sizeLimit": _quantity(parse_shm_size(the_plan.shm_size)),
                },
            },
            *(
                {
                    "name": f"{'in' if v.read_only else 'out'}-{v.name}".lower().replace("_", "-"),
                    "persistentVolumeClaim": {"claimName": v.claim, "readOnly": v.read_only},
                }
                for v in volumes
            ),
        ],
    }


def literal(text: str) -> str:
    """``text`` as Kubernetes passes it on: it expands ``$(NAME)`` in commands and
    variable values, and ``$$`` is its escape for ``$``."""
    return text.replace("$", "$$")


def _variables(the_plan: RunPlan, name: str, added: Mapping[str, str]) -> list[dict[str, Any]]:
    values = {**dict(the_plan.variables), "ENVBUILD_RUN_ID": name, **added}
    return [{"name": key, "value": literal(value)} for key, value in values.items()]


def _indexed_job(
    the_plan: RunPlan,
    distribution: PyTorch | TensorFlow,
    name: str,
    image_ref: str,
    volumes: Sequence[Volume],
) -> dict[str, Any]:
    count = node_count(distribution)
    hosts = [f"{name}-{i}.{name}" for i in range(count)]
    rank = {
        "name": "NODE_RANK",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
    }
    script = tuple(literal(a) for a in the_plan.argv)
    if isinstance(distribution, PyTorch):
        # The one reference Kubernetes expands: the node rank, known where the pod runs.
        node = node_plan(distribution, hosts, script, "$(NODE_RANK)", root=False)
        added = {k: v for k, v in node.environment if k != "NODE_RANK"}
        env = [rank, *_variables(the_plan, name, added)]
        argv: Sequence[str] = node.argv
    else:
        configs = {
            f"TF_CONFIG_{i}": dict(
                node_plan(distribution, hosts, the_plan.argv, i, root=False).environment
            )["TF_CONFIG"]
            for i in range(count)
        }
        env = [rank, *_variables(the_plan, name, configs)]
        pick = 'TF_CONFIG="$(printenv "TF_CONFIG_$JOB_COMPLETION_INDEX")" && export TF_CONFIG'
        argv = ("sh", "-c", literal(f'{pick} && exec "$@"'), "envbuild-task", *script)
    pod = _pod_spec(the_plan, [_container(the_plan, argv, image_ref, volumes, env)], volumes)
    pod["subdomain"] = name
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": count,
        "parallelism": count,
        "backoffLimit": 0,
        "template": {"metadata": {"labels": _labels(name)}, "spec": pod},
    }
    if the_plan.config.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, int(the_plan.config.timeout))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": spec,
    }


def _mpijob(
    the_plan: RunPlan, distribution: Mpi, name: str, image_ref: str, volumes: Sequence[Volume]
) -> dict[str, Any]:
    forward = the_plan.forwarded_variables()
    root = is_root(the_plan.user)
    script = tuple(literal(a) for a in the_plan.argv)
    launcher = node_plan(distribution, None, script, 0, root=root, forward=forward)
    worker = node_plan(distribution, None, script, 1, root=root)

    def replica(role: str, count: int, node: NodePlan, gpus: bool) -> dict[str, Any]:
        env = _variables(the_plan, name, {})
        container = _container(
            the_plan,
            node.argv,
            image_ref,
            volumes,
            env,
            name=role.lower(),
            gpus=gpus,
            keep=node.capabilities,
        )
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": _pod_spec(the_plan, [container], volumes),
            },
        }

    run_policy: dict[str, Any] = {"cleanPodPolicy": "Running", "backoffLimit": 0}
    if the_plan.config.timeout is not None:
        run_policy["activeDeadlineSeconds"] = max(1, int(the_plan.config.timeout))
    return {
        "apiVersion": MPIJOB_API,
        "kind": "MPIJob",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "slotsPerWorker": distribution.processes_per_node,
            "sshAuthMountPath": SSH_DIR,
            "mpiImplementation": "OpenMPI",
            "runPolicy": run_policy,
            "mpiReplicaSpecs": {
                "Launcher": replica("Launcher", 1, launcher, gpus=False),
                "Worker": replica("Worker", distribution.nodes, worker, gpus=True),
            },
        },
    }


def to_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """``documents`` as YAML (block style, every string JSON-quoted: never retyped)."""
    out: list[str] = []
    for document in documents:
        out.append("---")
        _emit(document, 0, out)
    return "\n".join(out) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float | str):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} as YAML")


_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*")
_YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}  # YAML 1.1 retypes


def _key(key: object) -> str:
    text = str(key)
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _emit(value: object, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                out.append(f"{pad}{_key(key)}:")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}{_key(key)}: {_inline(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and item:
                lines: list[str] = []
                _emit(item, indent + 2, lines)
                lines[0] = f"{pad}- {lines[0][indent + 2 :]}"
                out += lines
            elif isinstance(item, list) and item:
                out.append(f"{pad}-")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}- {_inline(item)}")
    else:
        out.append(pad + _scalar(value))


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)

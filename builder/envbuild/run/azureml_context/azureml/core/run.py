"""``Run`` for scripts that envbuild runs with ``--azureml-context``.

``Run.get_context()`` gives the run the script is part of. What it logs is
appended, one JSON object a line, to the file ``ENVBUILD_METRICS_FILE`` names
(a file envbuild mounts into the container and reads after the run). Each line
is one ``write`` on an ``O_APPEND`` descriptor, so the lines of several
processes (the ranks of a distributed run) never interleave.

Written for Python 3.6 to 3.13, standard library only (see the README beside
the ``azureml`` folder).
"""

import json
import math
import os
import threading
import time
import uuid
from typing import Any, Dict, Optional

METRICS_FILE_VARIABLE = "ENVBUILD_METRICS_FILE"
RUN_ID_VARIABLE = "ENVBUILD_RUN_ID"
EXPERIMENT_VARIABLE = "ENVBUILD_EXPERIMENT"
INPUTS_ROOT = "/inputs"
FORMAT = 1  # the "v" of every line; envbuild.run.metrics reads it
MAX_LINE_BYTES = 1 << 20  # envbuild rejects longer lines: refuse them here, with the reason
MAX_NAME_CHARS = 255

_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")

# What scripts reach for that only a workspace has, and what to do instead.
_ALTERNATIVES = {
    "upload_file": "write the file under ./outputs: envbuild keeps it with the run",
    "upload_files": "write the files under ./outputs: envbuild keeps them with the run",
    "upload_folder": "write the folder under ./outputs: envbuild keeps it with the run",
    "download_file": "use envbuild.run.files (or `envbuild runs download`) on the host",
    "download_files": "use envbuild.run.files (or `envbuild runs download`) on the host",
    "log_image": "save the image under ./outputs (it is kept with the run)",
    "log_confusion_matrix": "log_table(name, {...}) or a file under ./outputs",
    "log_accuracy_table": "log_table(name, {...}) or a file under ./outputs",
    "log_predictions": "log_table(name, {...}) or a file under ./outputs",
    "log_residuals": "log_table(name, {...}) or a file under ./outputs",
    "register_model": "keep the model under ./outputs; register it from the host",
    "submit_child": "start another `envbuild run` from the host",
    "child_run": "start another `envbuild run` from the host",
    "get_secret": "pass it with `envbuild run -e NAME` (or a mounted file)",
    "get_secrets": "pass them with `envbuild run -e NAME` (or mounted files)",
    "cancel": "stop the run from the host (Ctrl-C or --timeout)",
    "fail": "exit with a non-zero code",
}


class UnsupportedFeatureError(ImportError):
    """An Azure ML name this minimal ``azureml.core`` does not provide.

    An ``ImportError``, so that ``from azureml.core import Workspace`` fails
    with this message (and ``except ImportError`` fallbacks keep working).
    """


def unsupported(feature: str) -> UnsupportedFeatureError:
    """The error for ``feature``: what is missing, and envbuild's alternative."""
    short = feature.rsplit(".", 1)[-1]
    hint = _ALTERNATIVES.get(short, "run the workspace-side code on the host with envbuild.azureml")
    return UnsupportedFeatureError(
        "{} is not available inside an envbuild run (Azure ML workspace feature); "
        "envbuild provides Run.get_context() with log, log_list, log_row, log_table and tag. "
        "Instead: {}".format(feature, hint)
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy/torch scalars by ``item()``, arrays by ``tolist()``."""
    for method in ("item", "tolist"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return convert()
            except (TypeError, ValueError):
                continue
    return str(value)


def _rank() -> Optional[str]:
    for name in _RANK_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


class _Experiment(object):
    """What a script reads of ``run.experiment``: its name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "Experiment(name={!r})".format(self.name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(str(unsupported("Experiment." + name)))


class Run(object):
    """The run a script is part of. Use :meth:`get_context`; never construct it."""

    _context = None  # type: Optional[Run]
    _lock = threading.Lock()

    def __init__(self, run_id: str, metrics_file: Optional[str]) -> None:
        self.id = run_id
        self.number = 0
        self.parent = None  # type: Optional[Run]
        self.experiment = _Experiment(os.environ.get(EXPERIMENT_VARIABLE) or "envbuild")
        self.display_name = run_id
        self._metrics_file = metrics_file
        self._metrics = {}  # type: Dict[str, Any]
        self._tags = {}  # type: Dict[str, str]
        self._series = {}  # type: Dict[str, Dict[str, Any]]
        self._write_lock = threading.Lock()

    # The run itself
    # ------------------------------------------------------------------

    @classmethod
    def get_context(cls, allow_offline: bool = True, **kwargs: Any) -> "Run":
        """The run of this process (one per process, made on first use)."""
        with cls._lock:
            if cls._context is None or cls._context._pid != os.getpid():
                run_id = os.environ.get(RUN_ID_VARIABLE)
                kind = Run if run_id else _OfflineRun
                context = kind(
                    run_id or "OfflineRun_{}".format(uuid.uuid4()),
                    os.environ.get(METRICS_FILE_VARIABLE) or None,
                )
                context._pid = os.getpid()
                cls._context = context
            return cls._context

    _pid = 0

    @property
    def input_datasets(self) -> Dict[str, str]:
        """Each ``envbuild run --input NAME=...`` by name: its path in the container."""
        try:
            names = sorted(os.listdir(INPUTS_ROOT))
        except OSError:
            return {}
        return {name: os.path.join(INPUTS_ROOT, name) for name in names}

    def get_status(self) -> str:
        """``"Running"``: a script asks this of the run it is part of."""
        return "Running"

    def get_details(self) -> Dict[str, Any]:
        """The run's id and status (what an in-run script can know)."""
        return {"runId": self.id, "status": "Running", "target": "local"}

    def complete(self, _set_status: bool = True) -> None:
        """Nothing to do: envbuild ends the run when the script exits."""

    def flush(self, timeout_seconds: int = 300) -> None:
        """Nothing to do: every line is written when it is logged."""

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "Run(id={!r}, experiment={!r})".format(self.id, self.experiment.name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        message = str(unsupported("Run." + name))
        raise AttributeError(message)

    # Metrics and tags
    # ------------------------------------------------------------------

    def log(self, name: str, value: Any, description: str = "", step: Any = None) -> None:
        """Log ``value`` under ``name``; logging a name several times gives a list."""
        self._record("log", name, value)

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        """Log a list of values under ``name``."""
        self._record("list", name, list(value))

    def log_row(self, name: str, description: Optional[str] = None, **kwargs: Any) -> None:
        """Log one row (``column=value`` pairs) of the table ``name``."""
        self._record("row", name, dict(kwargs))

    def log_table(self, name: str, value: Dict[str, Any], description: str = "") -> None:
        """Log a table: a mapping of column name to a list of values."""
        if not isinstance(value, dict):
            raise TypeError("log_table({!r}): expected a dict of column -> list".format(name))
        self._record("table", name, {str(k): list(v) for k, v in value.items()})

    def tag(self, key: str, value: Any = None) -> None:
        """Tag the run (``value`` may be left out: an empty tag)."""
        self._record("tag", key, "" if value is None else str(value))

    def set_tags(self, tags: Dict[str, Any]) -> None:
        """Tag the run with every pair of ``tags``."""
        for key, value in tags.items():
            self.tag(key, value)

    def get_tags(self) -> Dict[str, str]:
        """The tags this process set."""
        return dict(self._tags)

    def get_metrics(self, name: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
        """What this process logged (all ranks' metrics are in envbuild's history)."""
        if name is not None:
            return {name: self._metrics[name]} if name in self._metrics else {}
        return dict(self._metrics)

    def _record(self, kind: str, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(
                "metric or tag name {!r}: expected a non-empty string of at most {} "
                "characters".format(name, MAX_NAME_CHARS)
            )
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN or Infinity: "nan", "inf" as Azure shows them
        entry = {"v": FORMAT, "kind": kind, "name": name, "value": value, "time": time.time()}
        rank = _rank()
        if rank is not None:
            entry["rank"] = rank
        line = (json.dumps(entry, default=_plain, allow_nan=False) + "\n").encode("utf-8")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(
                "{} {!r}: {} bytes once encoded, more than the {} a metric may take; "
                "write large data under ./outputs instead".format(
                    kind, name, len(line), MAX_LINE_BYTES
                )
            )
        with self._write_lock:
            self._remember(kind, name, json.loads(line.decode("utf-8"))["value"])
            if self._metrics_file:
                self._append(line)

    def _remember(self, kind: str, name: str, value: Any) -> None:
        """This process's own part of envbuild.run.metrics.merge (the same rule)."""
        if kind == "tag":
            self._tags[name] = value
            return
        series = self._series.get(name)
        if kind == "table" or series is None or series["table"] is not None:
            series = {"table": None, "items": [], "logs": 0, "collection": False}
            self._series[name] = series
        if kind == "table":
            series["table"] = value
        elif kind == "log":
            series["items"].append(value)
            series["logs"] += 1
        else:
            series["items"].extend(value if kind == "list" else [value])
            series["collection"] = True
        if series["table"] is not None:
            self._metrics[name] = series["table"]
        elif series["logs"] == 1 and not series["collection"]:
            self._metrics[name] = series["items"][0]
        else:
            self._metrics[name] = list(series["items"])

    def _append(self, line: bytes) -> None:
        assert self._metrics_file is not None
        fd = os.open(self._metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, line)
            while written < len(line):  # only a signal or a full disk splits a write
                written += os.write(fd, line[written:])
        finally:
            os.close(fd)


class _OfflineRun(Run):
    """The run outside envbuild (and outside Azure ML): metrics stay in memory.

    Scripts test ``isinstance(run, _OfflineRun)`` to tell a local try-out from
    a tracked run; inside an envbuild run ``Run.get_context()`` is tracked.
    """

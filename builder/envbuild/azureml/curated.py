"""Azure ML's curated environment names and the ``curated/`` environments that replace them.

The one home of that table: ``Environment.get(workspace=ws, name=...)`` reads
it, ``envbuild import azureml`` reads it, and ``docs/catalog.md`` shows it (a
unit test holds the page to this table).

Azure ML's curated images were built from Dockerfiles that were never public;
each replacement here is readable and locked. A name maps to the closest
environment of the catalog, and :data:`NOTES` says where the two differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from envbuild.errors import UsageError

CATALOG_FOLDER = "curated"

#: Azure ML curated environment name -> the ``curated/`` environment that replaces it.
CURATED_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "AzureML-Minimal": "python-3.8",
        "AzureML-Tutorial": "python-3.8",
        "AzureML-PyTorch-1.6-CPU": "pytorch-1.6-gpu",
        "AzureML-PyTorch-1.6-GPU": "pytorch-1.6-gpu",
        "AzureML-sklearn-1.5": "sklearn-1.5-cpu",
        "AzureML-TensorFlow-2.16-CPU": "tensorflow-2.16-cpu",
    }
)

#: Where a replacement differs from what Azure ML's image held (shown with the table).
NOTES: Mapping[str, str] = MappingProxyType(
    {
        "AzureML-Minimal": "Python 3.8 without azureml-defaults; the run's azureml.core is "
        "envbuild's own",
        "AzureML-Tutorial": "Python 3.8 only: add the tutorial's packages with "
        "CondaDependencies or [pip]",
        "AzureML-PyTorch-1.6-CPU": "the GPU environment: its CUDA 10.2 wheels run on CPUs, "
        "and runs see no GPU unless asked",
        "AzureML-PyTorch-1.6-GPU": "torch 1.6.0 and torchvision 0.7.0 from PyPI, CUDA 10.2, "
        "Python 3.8 on Ubuntu 20.04",
        "AzureML-sklearn-1.5": "scikit-learn 1.5 with NumPy, SciPy and pandas, Python 3.11",
        "AzureML-TensorFlow-2.16-CPU": "tensorflow-cpu 2.16, Python 3.11",
    }
)


def catalog_root(start: Path | None = None) -> Path:
    """The ``curated/`` folder: the one beside envbuild's source, else ``start`` (cwd)'s.

    Raises :class:`UsageError` when neither holds one.
    """
    beside = Path(__file__).resolve().parents[3] / CATALOG_FOLDER
    here = (start or Path.cwd()) / CATALOG_FOLDER
    for candidate in (beside, here):
        if candidate.is_dir():
            return candidate
    raise UsageError(
        f"no curated catalog: neither {beside} nor {here} is a folder",
        hint="run from a checkout of envbuild, or pass catalog=PATH to Workspace(...)",
    )


def curated_folder(azure_name: str, catalog: Path | None = None) -> Path:
    """The folder of the environment replacing Azure ML's ``azure_name`` (any case, or a
    reference such as ``azureml:AzureML-sklearn-1.5:1``).

    Raises :class:`UsageError` for a name the table does not hold (with "did you mean").
    """
    from envbuild.importers.azureml import resolve_curated

    _, name = resolve_curated(azure_name)
    return (catalog or catalog_root()) / name

"""Azure ML's curated names: one table, shown in docs/catalog.md, naming real environments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from envbuild.azureml.curated import CURATED_NAMES, NOTES, catalog_root, curated_folder
from envbuild.definition.model import load
from envbuild.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_maps_to_a_curated_environment() -> None:
    assert set(NOTES) == set(CURATED_NAMES)
    for azure_name in CURATED_NAMES:
        folder = curated_folder(azure_name)
        assert load(folder).name == folder.name


def test_names_match_without_regard_to_case() -> None:
    assert curated_folder("azureml-pytorch-1.6-gpu") == ROOT / "curated" / "pytorch-1.6-gpu"
    assert curated_folder("azureml:AzureML-sklearn-1.5:1") == ROOT / "curated" / "sklearn-1.5-cpu"
    with pytest.raises(UsageError, match="not an Azure ML curated environment") as caught:
        curated_folder("AzureML-PyTorch-1.7-GPU")
    assert "did you mean AzureML-PyTorch-1.6-GPU" in (caught.value.hint or "")


def test_docs_catalog_shows_the_table() -> None:
    text = (ROOT / "docs" / "catalog.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(AzureML-[^`]+)` \| \[`([^`]+)`\]\([^)]+\) \| (.+) \|$", text, re.M)
    assert {name: (folder, note) for name, folder, note in rows} == {
        name: (folder, NOTES[name]) for name, folder in CURATED_NAMES.items()
    }


def test_no_catalog_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import envbuild.azureml.curated as curated

    monkeypatch.setattr(curated, "__file__", str(tmp_path / "a" / "b" / "c" / "curated.py"))
    with pytest.raises(UsageError, match="no curated catalog") as caught:
        catalog_root(tmp_path)
    assert caught.value.hint and "catalog=" in caught.value.hint
    (tmp_path / "curated").mkdir()
    assert catalog_root(tmp_path) == tmp_path / "curated"

"""Importers: other tools' environment definitions turned into ``env.toml``.

Each importer is pure up to its result: it reads the files it is given,
converts, and returns an object holding the ``env.toml`` text, the extra
files and every warning about what could not be carried over; writing is a
separate, atomic step (:meth:`envbuild.importers.azureml.ImportResult.write`).
An importer may import the definition layer (to check values by the same
grammar validation uses, and to validate what it writes), errors and the
lock model's facts about distributions; nothing that talks to the engine.

* :mod:`envbuild.importers.azureml`: Azure ML SDK v1 environment folders,
  SDK/CLI v2 environment YAML, curated environment names, conda files and v1
  run configurations (``envbuild import azureml``).
"""

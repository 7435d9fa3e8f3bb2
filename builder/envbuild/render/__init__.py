"""The render stage: definition + locks -> build context (Dockerfile and files).

Modules: :mod:`.dockerfile` (the data the templates need, Jinja2 with an
enforced quoting ``finalize``), :mod:`.quoting` (the one quoting path),
:mod:`.context` (the materialised context: files, modes, digests).

May import: :mod:`envbuild.definition`, :mod:`envbuild.lock.model`,
:mod:`envbuild.cache.memo` (to record what rendering read), and the top-level
:mod:`envbuild.settings` (the default platform). Never the engine.
"""

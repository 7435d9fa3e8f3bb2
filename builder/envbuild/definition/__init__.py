"""The definition stage: ``env.toml`` -> a validated, frozen :class:`Environment`.

Owns the schema, the value grammar (package specs, names, paths) and ``extends``.
Modules: :mod:`.model` (load, validate, merge), :mod:`.grammar` (anchored
patterns for every user string).

May import: :mod:`envbuild.errors` only.
"""

"""The cache: the content hash, the memo, the lookup.

Modules: :mod:`.hashing` (sha256 over the canonical context), :mod:`.memo`
(a record of the inputs a render read, so a hit needs no render),
:mod:`.lookup` (the one cache lookup, by the hit rule of
:mod:`envbuild.identity`, which holds the tag scheme and every label key).

May import: :mod:`envbuild.render`, and :mod:`envbuild.engine` for the one
lookup request. Kept cheap to import: the console script's hit path uses it.
"""

"""Image identity and the cache: the content hash, the memo, the lookup.

Modules: :mod:`.hashing` (sha256 over the canonical context), :mod:`.memo`
(a record of the inputs a render read, so a hit needs no render).

May import: :mod:`envbuild.render`, and :mod:`envbuild.engine` for the one
lookup request. Kept cheap to import: the console script's hit path uses it.
"""

"""envbuild: transparent, versioned environment definitions turned into images.

The pipeline, one module per stage::

    definition (load + validate env.toml) -> render (Dockerfile + context)
    -> hashing (content hash) -> build (engine) -> run

See ``envbuild.api`` for the functions other job runners build on.
"""

__version__ = "0.1.0"

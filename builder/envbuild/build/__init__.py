"""The build stage: resolve, lock check, cache, BuildKit build; and base bootstrap.

Modules: :mod:`.builder` (``envbuild build``), :mod:`.bases` (``envbuild base``),
:mod:`.result` (what a build answers), :mod:`.progress` (the build display).

May import: definition, lock, render, cache, engine.

The package is callable: ``envbuild.build(env)`` is
:func:`envbuild.build.builder.build`.
"""

from envbuild._callable import callable_package

callable_package(__name__, "envbuild.build.builder", "build")  # envbuild.build(...) builds

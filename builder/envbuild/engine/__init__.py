"""Every word with Docker: BuildKit builds through the CLI, images and containers through the API.

Modules: :mod:`.protocols` (the data exchanged and the protocol family: image
store, builder, container runtime), :mod:`.records` (the records a cache hit
reads, without :mod:`dataclasses`; re-exported by :mod:`.protocols`),
:mod:`.runner` (``run_to_completion``: the one container lifecycle),
:mod:`.docker` (:class:`DockerEngine`, the real engine), :mod:`.api` (the
Engine API channel: the unix socket, or the SDK for other hosts),
:mod:`.buildkit` (builds through the docker CLI), :mod:`.registry` (the
registry's own API: digests, credentials).

Nothing else in envbuild talks to Docker (SDK, raw API or CLI): other stages
take an engine typed by a protocol, so a test hands them a fake.
May import: :mod:`envbuild.errors`, :mod:`envbuild.settings`, :mod:`envbuild.log`.
"""

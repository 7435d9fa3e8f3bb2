"""Every word with Docker: BuildKit builds through the CLI, images and containers through the API.

Nothing else in envbuild talks to Docker (SDK, raw API or CLI).
May import: :mod:`envbuild.errors`, :mod:`envbuild.settings`.
"""

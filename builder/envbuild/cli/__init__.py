"""The command line: click commands (loaded lazily), the one exit-code map, the fast paths.

Modules: :mod:`.main` (the group and the exit-code map), one module per
command group, :mod:`.launcher` (the console script, with the click-free
cache-hit and run paths).

May import everything; nothing imports it. Only this package imports click.
"""

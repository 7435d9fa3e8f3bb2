"""The curated catalog: order, publish, check, test, packages, diff, explain, doctor.

Each module implements the command of its name (:mod:`.order` builds a
catalog parents first).

May import: build, run and everything below them. Never click.
"""

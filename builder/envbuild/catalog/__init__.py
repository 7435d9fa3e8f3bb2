"""The curated catalog: order, publish, check, test, packages, diff, explain, doctor.

Each module implements the command of its name (:mod:`.order` builds a
catalog parents first; :mod:`.results` holds what of it needs no definition
model: discovery, the order, the results and their report).

May import: build, run and everything below them. Never click.
"""

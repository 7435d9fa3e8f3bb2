"""What a dead envbuild left behind, found and removed by the next one.

Every container and network envbuild creates carries ``io.envbuild.owner``:
the host, boot, PID namespace, PID and start time of the process that made it
(see :mod:`envbuild.process`). A ``kill -9``, a crash or a reboot skips that
process's own cleanup; the next ``envbuild run``, ``runs`` or ``test`` lists
what carries the label, removes whatever belongs to a process known to be
dead (never a live one's, nor another machine's), and marks its runs ``lost``
in the history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from envbuild.engine.docker import RunEngine
from envbuild.errors import EngineError, HistoryError
from envbuild.process import OWNER_LABEL, owner_dead
from envbuild.run.config import RUN_LABEL


def reap(
    engine: RunEngine | None, home: Path, log: Callable[[str], None] | None = None
) -> list[str]:
    """Remove what dead envbuild processes left in ``engine``; mark their runs lost.

    Best effort and quiet about failures: an engine that cannot be reached
    leaves nothing to reap, a history that cannot be written keeps its rows.
    Returns the ids of the runs marked lost.
    """
    from envbuild.run.history import DATABASE, History

    left: list[str] = []
    if engine is not None:
        try:
            owned = engine.list_owned(OWNER_LABEL)
        except EngineError:
            owned = []
        dead = sorted({o.labels[OWNER_LABEL] for o in owned if owner_dead(o.labels[OWNER_LABEL])})
        for owner in dead:
            mine = [o for o in owned if o.labels[OWNER_LABEL] == owner]
            try:
                engine.remove_labelled(f"{OWNER_LABEL}={owner}")
            except EngineError:
                continue
            left += [o.labels[RUN_LABEL] for o in mine if RUN_LABEL in o.labels]
            if log is not None:
                what = ", ".join(f"{o.kind} {o.id[:12]}" for o in mine)
                log(f"envbuild: removed what an envbuild process that died left: {what}")
    lost: list[str] = []
    with contextlib.suppress(HistoryError):
        lost = History(home / DATABASE).mark_lost(left)
    if lost and log is not None:
        log(f"envbuild: marked lost (their envbuild died): run {', run '.join(lost)}")
    if lost and any((home / "runs" / run_id).is_dir() for run_id in lost):  # snapshot runs
        from envbuild.log import quiet
        from envbuild.run.files import settle

        settle(home, lost, log or quiet)
    return lost

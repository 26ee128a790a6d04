"""Planning a parallel run: which collections wait for which, how many key ranges each gets,
and the work units (etl/units.py) in claim order.
"""

from __future__ import annotations

import logging

from etl import units

log = logging.getLogger("etl.parallel")


# -- planning --------------------------------------------------------------------------------
def needs_of(mapping, name: str, in_run: set[str]) -> list[str]:
    """The other collections of this run whose rows a collection's rows point at."""
    cm = mapping.for_collection(name)
    if cm is None:
        return []
    refs: set[str] = set()
    if cm.edge is not None:
        refs |= {cm.edge.from_collection, cm.edge.to_collection}
    elif cm.generic is not None and cm.generic.edge:  # its ends may be in any document table
        refs |= {n for n in in_run if (o := mapping.for_collection(n)) and o.kind == "document"}
    else:
        for t in cm.targets():
            refs |= {f.collection for f in t.references if f.collection}
    return sorted((refs - {name}) & in_run)


MIN_RANGE_DOCS = 1000  # below this, a range costs more in queries and start-up than it saves


def ranges_for(count: int, workers: int) -> int:
    """How many key ranges a collection gets: two per worker (so that a slow range does not
    leave the others idle), none smaller than MIN_RANGE_DOCS."""
    return max(1, min(2 * workers, count // MIN_RANGE_DOCS))


def plan_units(
    mapping, source, names: list[str], workers: int, deferred_tables: dict[str, list[str]]
) -> list[units.PlannedUnit]:
    """deferred_tables: table -> the collections of this run that write it, for the tables whose
    indexes were dropped for the load (each gets an 'index' unit that runs once they are done)."""
    in_run = set(names)
    planned: list[units.PlannedUnit] = []
    for name in names:
        needs = needs_of(mapping, name, in_run)
        info = source.collection(name)
        points: list[str] = []
        parts = ranges_for(info.count, workers)
        if mapping.for_collection(name) is not None and parts > 1:
            points = source.split_points(name, parts)
        bounds = [None, *points, None]
        planned += [
            units.PlannedUnit(name, "range", lo, hi, needs) for lo, hi in zip(bounds, bounds[1:])
        ]
        planned.append(units.PlannedUnit(name, "finish"))
        log.info(
            "%s: %d documents in %d key range(s)%s",
            name,
            info.count,
            len(bounds) - 1,
            f", after {', '.join(needs)}" if needs else "",
        )
    for table, written_by in deferred_tables.items():
        planned.append(units.PlannedUnit(table, "index", needs=sorted(written_by)))
    planned.append(units.PlannedUnit("*", "final"))
    return planned

"""What an evaluation covers: which snapshots, which bodyparts, which pcutoff.

Each function reads its argument the way DeepLabCut 3's ``evaluate_network`` does and raises a
one-line error (ConfigError for a bad value, SnapshotError for snapshots) otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dlc_train.config import ConfigError
from dlc_train.runners.snapshots import Snapshot, SnapshotError, list_snapshots


def parse_index(value: int | str | None, default: int | str) -> int | str:
    """``snapshotindex``: an int (negative from the end), "all" or "best"; None: ``default``
    (the project's ``snapshotindex``). Numeric strings ("-1") are ints."""
    value = default if value is None else value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("all", "best"):
            return text
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"snapshot index {value!r}: use a number (-1: the last), 'all' "
                              "or 'best'") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"snapshot index {value!r}: use a number (-1: the last), 'all' or "
                          "'best'")
    return value


def select_snapshots(folder: Path, index: int | str, names: Sequence[str] | None = None,
                     prefix: str = "snapshot") -> list[Snapshot]:
    """The snapshots to evaluate, in DeepLabCut's ``snapshotindex`` order: regular snapshots
    by epoch, then the best one last (so -1 is the best snapshot when there is one).

    Args:
        folder: the shuffle's train folder.
        index: from :func:`parse_index`.
        names: snapshot names without ``.pt`` (``snapshot-050``); when given, ``index`` is
            ignored and every name must exist.
        prefix: the snapshots' file prefix.
    """
    found = sorted(list_snapshots(folder, prefix), key=lambda s: (s.best, s.epoch))
    if not found:
        raise SnapshotError(f"no {prefix}-*.pt in {folder}: train this shuffle first")
    listing = ", ".join(s.path.name for s in found)
    if names is not None:
        by_name = {s.path.stem: s for s in found}
        missing = [n for n in names if Path(n).stem not in by_name]
        if missing:
            raise SnapshotError(f"snapshot {missing[0]} is not in {folder} (found {listing})")
        return [by_name[Path(n).stem] for n in names]
    if index == "all":
        return found
    if index == "best":
        best = [s for s in found if s.best]
        if not best:
            raise SnapshotError(f"no best snapshot in {folder} (found {listing})")
        return best[-1:]
    if not -len(found) <= int(index) < len(found):
        raise SnapshotError(f"snapshot index {index} is out of range: {folder} holds "
                            f"{len(found)} snapshot(s) ({listing})")
    return [found[int(index)]]


def bodypart_subset(bodyparts: list[str], unique: list[str],
                    comparison: str | Sequence[str] | None) -> tuple[list[int], list[int]]:
    """Indices of the bodyparts and unique bodyparts ``comparison_bodyparts`` keeps ("all" or
    None: every one)."""
    if comparison is None or comparison == "all":
        return list(range(len(bodyparts))), list(range(len(unique)))
    wanted = {comparison} if isinstance(comparison, str) else set(comparison)
    unknown = sorted(wanted - set(bodyparts) - set(unique))
    if unknown:
        raise ConfigError(f"comparison bodyparts {unknown} are not bodyparts of the project "
                          f"({', '.join(bodyparts + unique)})")
    return ([k for k, b in enumerate(bodyparts) if b in wanted],
            [k for k, b in enumerate(unique) if b in wanted])


def resolve_pcutoff(pcutoff: float | Sequence[float] | dict[str, float] | None,
                    project_pcutoff: float | None, names: list[str]) -> float | list[float]:
    """One pcutoff, or one per evaluated bodypart (``names``: bodyparts then unique ones).

    None: the project's ``pcutoff`` (0.6 when unset); a dict: per bodypart name, 0.6 for the
    ones it does not name; a list: one value per name, in order.
    """
    if pcutoff is None:  # kept as written (an int stays an int in the results' index)
        pcutoff = project_pcutoff if isinstance(project_pcutoff, (int, float)) else 0.6
    if isinstance(pcutoff, dict):
        unknown = sorted(set(pcutoff) - set(names))
        if unknown:
            raise ConfigError(f"pcutoff names {unknown}, which are not evaluated bodyparts "
                              f"({', '.join(names)})")
        return [float(pcutoff.get(name, 0.6)) for name in names]
    if isinstance(pcutoff, (int, float)) and not isinstance(pcutoff, bool):
        return pcutoff
    values = [float(v) for v in pcutoff]
    if len(values) != len(names):
        raise ConfigError(f"pcutoff has {len(values)} values but {len(names)} bodyparts are "
                          f"evaluated ({', '.join(names)}): give one per bodypart")
    return values

"""What a rerun of an experiment into the same folder may change.

Experiments that keep training state in their folder (``scenario-a``, ``structure``) continue it on
a rerun. Their settings are saved in ``study.json``; a rerun compares its settings with it, field
by field:

* *free* fields (output, progress, analysis-only settings) may change: the analysis is redone
  from the saved training results;
* *growing* fields (the epoch limit) may grow: members stopped by the old limit continue to the
  new one; they may not shrink below what was trained;
* every other field must be equal, else the rerun is refused before anything is trained, with a
  :class:`~tnattn.errors.RunDirectoryError` that names each changed field (the CLI prints it in one
  line). Use another output folder for other settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tnattn.errors import RunDirectoryError
from tnattn.io import read_json, to_jsonable, write_json

__all__ = ["STUDY_FILE", "check_rerun", "save_study"]

STUDY_FILE = "study.json"


def check_rerun(out: str | Path, name: str, config: Any, *, free: Sequence[str], grow: Sequence[str] = ()) -> None:
    """Refuse to rerun experiment ``name`` in ``out`` with settings its saved study does not allow.

    Parameters
    ----------
    out : path
        The experiment folder (nothing is checked when it holds no ``study.json``).
    name : str
        The experiment name saved in ``study.json``.
    config : dataclass instance
        The new settings.
    free, grow : sequences of str
        Field names that may change freely / only grow (see the module docstring).

    Raises
    ------
    RunDirectoryError
        The folder holds another experiment, or a field outside ``free`` changed (or a ``grow``
        field shrank).
    """
    path = Path(out) / STUDY_FILE
    if not path.is_file():
        return
    try:
        saved = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunDirectoryError(f"{path} cannot be read ({exc}); use another out") from None
    if saved.get("experiment") != name:
        raise RunDirectoryError(f"{out} holds a {saved.get('experiment')!r} study, not {name!r}; use another out")
    old, new = saved.get("config", {}), to_jsonable(config)
    changed, shrunk = [], []
    for key, value in new.items():
        if key in free or old.get(key) == value:
            continue
        if key in grow and isinstance(old.get(key), (int, float)) and value > old[key]:
            continue
        (shrunk if key in grow else changed).append(f"{key} (saved {old.get(key)!r}, now {value!r})")
    if changed or shrunk:
        parts = []
        if changed:
            parts.append("settings differ from the study in " + ", ".join(changed))
        if shrunk:
            parts.append("may only grow: " + ", ".join(shrunk))
        raise RunDirectoryError(
            f"cannot rerun into {out}: " + "; ".join(parts)
            + f". Only {', '.join(free)} may change"
            + (f" and {', '.join(grow)} may grow" if grow else "")
            + "; use another out for other settings"
        )


def save_study(out: str | Path, name: str, config: Any) -> None:
    """Write ``study.json`` (experiment name and settings) into ``out``."""
    write_json(Path(out) / STUDY_FILE, {"experiment": name, "config": config})

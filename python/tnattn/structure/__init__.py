"""Structure formation during training.

See the documentation: Science, "Loss spikes", and Experiments, "Structure formation".

- :mod:`~tnattn.structure.snapshots`: record the context point clouds of a fixed probe set during
  training (:class:`SnapshotRecorder`), store them compactly and reload them;
- :mod:`~tnattn.structure.spikes`: loss-spike events, inter-spike intervals, a periodicity test,
  D_eff step changes and their alignment with spikes;
- :mod:`~tnattn.structure.guard`: :class:`SpikeGuard`, the opt-in callback that reverts a spike if
  it raised D_eff;
- :mod:`~tnattn.structure.compare`: regularisation-schedule / guard comparisons over seeds.
"""

from tnattn.structure.compare import Setting, parse_setting, run_member, run_members, summarise_members
from tnattn.structure.guard import SpikeGuard, probe_deff
from tnattn.structure.snapshots import (
    ProbeSet,
    SnapshotRecorder,
    Snapshots,
    load_snapshots,
    make_probe,
    neighbourhood_index,
)
from tnattn.structure import spikes as _spikes
from tnattn.structure.spikes import *  # noqa: F401,F403  (the names of spikes.__all__)

__all__ = [
    "ProbeSet",
    "make_probe",
    "neighbourhood_index",
    "SnapshotRecorder",
    "Snapshots",
    "load_snapshots",
    "SpikeGuard",
    "probe_deff",
    "Setting",
    "parse_setting",
    "run_member",
    "run_members",
    "summarise_members",
] + _spikes.__all__

"""Scenario files: loading, validation, and lowering for the guest.

``load_scenario(path)`` gives a validated :class:`Scenario`; ``lower()`` the
guest's mapping layout and the gather calls (munmap expanded);
``to_protocol_lines()`` the ``SCN .. GO`` command lines of docs/protocol.md.
"""

from shootdown.scenario.geometry import Geometry
from shootdown.scenario.load import load_scenario, load_scenario_text, parse_scenario
from shootdown.scenario.lower import (
    Layout,
    Lowered,
    LoweredStep,
    guest_layout,
    lower,
    to_protocol_lines,
)
from shootdown.scenario.types import (
    CPU_FEATURES,
    GATHER_OPS,
    FlushTlbKernelPgtableStep,
    FlushTlbKernelRangeStep,
    FlushTlbMmStep,
    FlushTlbPageStep,
    FlushTlbRangeStep,
    GatherOp,
    GatherStep,
    KernelMapping,
    Mapping,
    MunmapStep,
    RawFlushStep,
    Scenario,
    Step,
)

__all__ = [
    "CPU_FEATURES", "GATHER_OPS", "FlushTlbKernelPgtableStep", "FlushTlbKernelRangeStep",
    "FlushTlbMmStep", "FlushTlbPageStep", "FlushTlbRangeStep", "GatherOp", "GatherStep",
    "Geometry", "KernelMapping", "Layout", "Lowered", "LoweredStep", "Mapping", "MunmapStep",
    "RawFlushStep", "Scenario", "Step", "guest_layout", "load_scenario", "load_scenario_text",
    "lower", "parse_scenario", "to_protocol_lines",
]

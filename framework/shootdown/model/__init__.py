"""The golden model of arm64 page-table teardown (mmu_gather + TLBI policy).

Pure: no I/O, no globals.  A scenario and a policy go in; the exact ordered
list of DSB / TLBI / ISB instructions each step should issue comes out::

    from shootdown.model import expected_sequence, POLICIES
    results = expected_sequence(scenario, "v4.20", cpu_features={"ttl"})
"""

from shootdown.model.expected import StepResult, expected_sequence, flatten
from shootdown.model.instructions import Dsb, GatherSnapshot, Instruction, Isb, Tlbi, Why
from shootdown.model.policy import DEFAULT_POLICY, POLICIES, Policy, get_policy

__all__ = ["DEFAULT_POLICY", "POLICIES", "Dsb", "GatherSnapshot", "Instruction", "Isb",
           "Policy", "StepResult", "Tlbi", "Why", "expected_sequence", "flatten",
           "get_policy"]

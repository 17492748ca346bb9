"""Cost plots: TLBIs and DSB ISH per teardown against region size (matplotlib, Agg).

One figure per granule, two panels (TLBI, DSB ISH), one line per policy,
from the *executed* counts the guest reported.  Log scales on both axes:
sizes go from 64 KiB to 1 GiB and counts from 1 to tens of thousands.
Only one guest is drawn per granule (the first with data, named in the
title): the size sweep sets no CPU features, so every guest issues the same.
"""

from __future__ import annotations

import io

from shootdown.report.data import ReportData, human_size, policy_key

#: fixed colours, so a policy looks the same in every figure
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]


def cost_figures(data: ReportData) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) per granule with size-sweep data."""
    if not data.costs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    colour = {p: _COLOURS[i % len(_COLOURS)] for i, p in enumerate(data.policies)}
    out = []
    for granule, by_guest in data.costs.items():
        guest = sorted(by_guest)[0]
        series = by_guest[guest]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=96)
        for ax, column, label in ((axes[0], 1, "TLBI instructions"),
                                  (axes[1], 2, "DSB ISH")):
            for policy in sorted(series, key=policy_key):
                pts = series[policy]
                ax.plot([p[0] for p in pts], [max(p[column], 0.8) for p in pts], marker="o",
                        label=policy, color=colour[policy], linewidth=1.6, markersize=4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())  # 1, 10, 100: counts, not 10^n
            ax.yaxis.set_minor_formatter(NullFormatter())
            sizes = sorted({p[0] for pts in series.values() for p in pts})
            ax.set_xticks(sizes, [human_size(s) for s in sizes], rotation=45, fontsize=8)
            ax.set_xlabel("region torn down (munmap)")
            ax.set_ylabel(f"{label} per teardown")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(label, fontsize=10)
        axes[0].legend(title="policy", fontsize=8)
        fig.suptitle(f"{granule} granule, guest {guest}: executed maintenance per munmap",
                     fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out.append((f"{granule} granule ({guest})", buf.getvalue()))
    return out

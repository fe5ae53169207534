"""The build's stats as a table: per source and task, what was read, written, rejected and why,
beside the record counts the SkyEyeGPT paper reports for that source (its training split: compare `train`)."""

from __future__ import annotations


def format_table(stats: dict) -> str:
    header = (
        f"{'source':<18}{'task':<14}{'read':>9}{'written':>9}{'rejected':>9}{'sampled':>9}{'train':>9}{'paper':>9}"
        "  rejected because"
    )
    lines = [header, "-" * len(header)]
    for name, source in stats["sources"].items():
        if source["status"] == "missing":
            lines.append(f"{name:<18}{'-':<14}  not on disk ({source['path']}): skipped")
            continue
        for task, count in source["tasks"].items():
            rejected = sum(count["rejected"].values())
            paper = source["paper"].get(task)
            reasons = "; ".join(f"{reason}: {n:,}" for reason, n in count["rejected"].items())
            lines.append(
                f"{name:<18}{task:<14}{count['read']:>9,}{count['written']:>9,}{rejected:>9,}"
                f"{count['sampled_out']:>9,}{count['written_by_split'].get('train', 0):>9,}"
                f"{'-' if paper is None else format(paper, ','):>9}  {reasons}"
            )
    lines.append("-" * len(header))
    lines.append(
        f"{stats['records_written']:,} records in {stats['seconds']:.1f} s ({stats['records_per_second'] or 0:,.0f}/s)"
    )
    return "\n".join(lines)

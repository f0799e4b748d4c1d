"""The report's opening: does contrastive tuning beat the best fine-tuning variant, per task
and probe, by more than the test clips' and seeds' luck? Tables of comparison.paired's
verdicts, recomputed from results.json and the predictions files each time the report is
written."""

import math
from pathlib import Path

from hear_contrastune.comparison.paired import (
    BEST_FINETUNE,
    BOOTSTRAP_SEED,
    LEVEL,
    REPLICATES,
    Comparison,
    comparisons,
)
from hear_contrastune.comparison.report.document import Block, Heading, Paragraph, TableBlock
from hear_contrastune.comparison.report.tables import Cell, Table
from hear_contrastune.comparison.results import Record
from hear_contrastune.comparison.run_layout import FINETUNE_METHODS, SHORT_TITLES, score_key


def row_name(task: str, shots: int) -> str:
    """A task, with its shots for a few-shot cell."""
    return task if not shots else f"{task} ({shots}-shot)"


def verdict_cell(c: Comparison | None) -> Cell:
    """"win +0.021 [+0.008, +0.034]" (naming the chosen variant against the best one)."""
    if c is None:
        return Cell("–")
    return Cell(c.text() + (f" vs {c.chosen}" if c.chosen else ""))


def verdict_table(found: list[Comparison], pairs: list[tuple[str, str]]) -> Table | None:
    """Rows = (task[, shots], comparison) for `pairs`, columns = probes; None if no cell."""
    found = [c for c in found if (c.a, c.b) in pairs]
    if not found:
        return None
    probes = sorted({c.probe for c in found}, key=score_key)
    keys = sorted({(c.task, c.shots, c.a, c.b) for c in found},
                  key=lambda k: (k[0], k[1] or math.inf, pairs.index((k[2], k[3]))))
    cells = {(c.task, c.shots, c.a, c.b, c.probe): c for c in found}
    one_pair = len({(c.a, c.b) for c in found}) == 1
    rows = [[Cell(row_name(task, shots)), *([] if one_pair else [Cell(f"{a} − {b}")]),
             *(verdict_cell(cells.get((task, shots, a, b, p))) for p in probes)]
            for task, shots, a, b in keys]
    header = ["task", *([] if one_pair else ["comparison"]),
              *(SHORT_TITLES.get(p, p) for p in probes)]
    return Table(header, rows, [None] * len(header), names=len(header) - len(probes))


def counts(found: list[Comparison]) -> str:
    """"2 wins, 1 tie, 0 losses" over the decided comparisons."""
    n = {v: sum(c.verdict == v for c in found) for v in ("win", "tie", "loss")}
    return (f"{n['win']} win{'s' * (n['win'] != 1)}, {n['tie']} tie{'s' * (n['tie'] != 1)}, "
            f"{n['loss']} loss{'es' * (n['loss'] != 1)}")


def method_text(found: list[Comparison]) -> str:
    """How the intervals were computed, and over which seeds."""
    seeds = sorted({s for c in found for s in c.seeds})
    text = (f"Each cell is A − B in the task's primary test score (mean over seeds; a k-fold "
            f"task's score is its fold mean) and its {LEVEL:.0%} interval: a bootstrap over "
            f"test clips within each seed ({REPLICATES} replicates, bootstrap seed "
            f"{BOOTSTRAP_SEED}, the same resampled clips for every method and seed, so the "
            "difference is paired), hierarchical over seeds (each replicate draws seeds with "
            "replacement; the frozen encoder's one seed pairs with every seed), and the "
            f"{LEVEL:.0%} percentile interval. win: the interval lies wholly above 0 (A "
            "better); loss: wholly below; tie: it covers 0. The best fine-tuning variant is "
            f"the one of {', '.join(FINETUNE_METHODS)} with the higher mean validation score "
            "of that probe on that task (never the test score); the cell names it.")
    if seeds:
        text += f" Seeds: {', '.join(map(str, seeds))}."
    if len(seeds) == 1:
        text += " With one seed, the interval covers the test clips only, not seed variation."
    return text


def verdict_blocks(records: list[Record], run: Path) -> list[Block]:
    """The verdict section: contrastive vs the best fine-tuning variant, then every other
    comparison; "no per-clip predictions" where a record has none (older results)."""
    found = comparisons(records, run)
    blocks: list[Block] = [Heading(2, "Verdict: contrastive tuning vs the best fine-tuning "
                                      "variant")]
    best = verdict_table(found, [("contrastive", BEST_FINETUNE)])
    if best is None:
        blocks.append(Paragraph("No such comparison: these results lack contrastive tuning or "
                                "a fine-tuning variant under a probe."))
    else:
        decided = [c for c in found if c.b == BEST_FINETUNE and c.decided]
        blocks.append(TableBlock(best, "contrastive − best fine-tuning variant",
                                 f"Over {len(decided)} task × probe cells: {counts(decided)}."))
    others = [(a, b) for a, b in dict.fromkeys((c.a, c.b) for c in found) if b != BEST_FINETUNE]
    table = verdict_table(found, others)
    if table is not None:
        blocks.append(TableBlock(table, "Every other comparison"))
    if found:
        blocks.append(Paragraph(method_text(found)))
    return blocks

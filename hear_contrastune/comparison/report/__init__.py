"""The comparison report of a `contrastune compare` run: which method's embeddings are better,
and how tuning changed them.

`write_report(run_dir)` reads what the run left (possibly only part of it) and writes
RUN/report.md, RUN/index.html (opens from disk) and RUN/plots/*.png; `write_merged_report`
writes the same into another folder from several finished runs (`contrastune report`):

0. the verdict: contrastive tuning against the best fine-tuning variant (and every other
   comparison), per task and probe, with paired bootstrap intervals (comparison.paired);
1. probe scores per method, task and probe (mean ± std over seeds), from results.json, for
   runs on all train clips (few-shot runs get their verdict rows and a score-vs-shots plot);
2. the geometry of each method's test embeddings (kNN label purity, silhouette, alignment,
   uniformity), which says what the probes are scoring;
3. plots: 2-D maps of the test embeddings (PCA, and t-SNE of the same clips), the kNN probe's
   validation score against k, and the training curves of the tuned methods.

The package reads in the order of the work: load, geometry, tables, plots, document; this
module lays the report out from them.
"""

import hashlib
import json
import re
from pathlib import Path

from hear_contrastune.atomic import atomic_dir, write_text
from hear_contrastune.comparison.options import flatten
from hear_contrastune.comparison.paired import PAIRED_DIR
from hear_contrastune.comparison.report.document import (
    Block,
    Bullets,
    Heading,
    Paragraph,
    Plot,
    TableBlock,
    html_page,
    markdown,
)
from hear_contrastune.comparison.report.geometry import (
    MEASURES,
    TSNE_PERPLEXITY,
    measure_embeddings,
)
from hear_contrastune.comparison.report.load import (
    MAX_POINTS,
    ReportInput,
    load_run,
    load_training,
    merge_runs,
)
from hear_contrastune.comparison.report.plots import (
    plot_knn_curves,
    plot_projections,
    plot_shots,
    plot_training,
)
from hear_contrastune.comparison.report.tables import (
    Cell,
    Table,
    fold_table,
    geometry_table,
    results_tables,
    training_table,
)
from hear_contrastune.comparison.report.verdict import verdict_blocks
from hear_contrastune.comparison.results import Record
from hear_contrastune.comparison.run_layout import RESULTS_FILE, SEARCH_DIR, method_key
from hear_contrastune.data.shots import ALL_SHOTS
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive
from hear_contrastune.outputs import check_output_dir, overlaps

REPORT_FILES = ("report.md", "index.html", "plots", PAIRED_DIR)  # what a report writes


def slug(name: str) -> str:
    """A file-name-safe form of a task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "task"


def option_lines(options: dict) -> list[str]:
    """`name: value` per option, nested options (the tuning) flattened as tuning.name."""
    return [f"{name}: {json.dumps(value)}" for name, value in flatten(options).items()]


def build_report(run: ReportInput, plot_dir: Path) -> list[Block]:
    """Measure, draw the plots into `plot_dir`, and lay out the report's blocks."""
    embeddings = measure_embeddings(run)
    training = load_training(run)
    methods = sorted({r.method for r in run.records} | {e.method for e in run.embeddings},
                     key=method_key)
    seeds = sorted({r.seed for r in run.records} | {e.seed for e in run.embeddings})
    tasks = sorted({r.task for r in run.records} | set(embeddings) | set(training))
    all_clips = [r for r in run.records if r.shots == ALL_SHOTS]  # few-shot runs: verdicts and plot
    blocks: list[Block] = [
        Heading(1, f"Comparison report: {run.path.name}"),
        Paragraph(f"{len(tasks)} task{'s' * (len(tasks) != 1)} ({', '.join(tasks) or 'none'}); "
                  f"methods {', '.join(methods) or 'none'}; seeds "
                  f"{', '.join(map(str, seeds)) or 'none'}."),
        *([Paragraph(f"Merged from {len(run.runs)} compare run{'s' * (len(run.runs) != 1)} "
                     "(`contrastune report`), which agree on every option that changes "
                     "results:"), Bullets(run.runs)] if run.runs else []),
        *verdict_blocks(run.records, run.path),
        Heading(2, "Probe scores"),
        Paragraph("Each task's primary test score (higher is better), mean ± sample std over "
                  "seeds (just the mean for one seed). Bold: the best method in the column. "
                  "The mean over tasks is ± the std over seeds of each seed's task average."),
    ]
    for title, table, note in results_tables(all_clips):
        blocks.append(TableBlock(table, title, note))
    blocks += shots_blocks(run.records, plot_dir)
    folds = fold_table(all_clips)
    if folds:
        blocks += [Heading(2, "k-fold tasks, fold by fold"),
                   Paragraph("A k-fold task's score above is the mean over its folds, as "
                             "heareval reports it; here each fold's test score (mean over "
                             "seeds), with the mean ± sample std over folds. Each tuned method "
                             "has one model per fold: test fold k, valid fold k+1, train on "
                             "the rest."),
                   TableBlock(folds)]
    if embeddings:
        blocks += [
            Heading(2, "Embedding geometry"),
            Paragraph(f"Measured on each method's test embeddings (for a k-fold task, each fold's "
                      "test clips under that fold's model, then averaged; "
                      f"at most {MAX_POINTS} clips, the same random sample for every method), "
                      "mean ± std over seeds. Bold: the best method in the column."),
            Bullets([f"{m.title}: {m.meaning}" for m in MEASURES]),
        ]
        for task, summary in embeddings.items():
            sample = (f", a sample of {MAX_POINTS} of {summary.n_clips} clips"
                      if summary.n_clips > MAX_POINTS else f", {summary.n_clips} clips")
            kind = "multilabel" if summary.multilabel else "multiclass"
            blocks.append(TableBlock(geometry_table(summary), f"{task} ({kind}{sample})"))
        blocks.append(Heading(2, "Test embeddings in 2-D"))
        for task, summary in embeddings.items():
            name = f"projection-{slug(task)}.png"
            plot_projections(summary, task, plot_dir / name)
            colour = ("by the clip's first label in vocabulary order (grey: no label)"
                      if summary.multilabel else "by class")
            blocks.append(Plot(f"plots/{name}", f"{task}: PCA of the L2-normalised test "
                                f"embeddings of each method's lowest seed, coloured {colour}. "
                                "The panel title gives the share of variance the two axes "
                                "keep."))
            name = f"tsne-{slug(task)}.png"
            plot_projections(summary, task, plot_dir / name, tsne=True)
            blocks.append(Plot(f"plots/{name}", f"{task}: t-SNE of the same clips, in the same "
                                f"colours (perplexity {TSNE_PERPLEXITY:g}, less for under "
                                f"{3 * TSNE_PERPLEXITY + 1:g} clips; seeded): who neighbours "
                                "whom, which two PCA axes can hide. Distances between clusters "
                                "and their sizes mean nothing here."))
        curves = {t: s for t, s in embeddings.items() if s.knn_curves}
        if curves:
            blocks.append(Heading(2, "kNN probe: validation score vs k"))
        for task, summary in curves.items():
            name = f"knn-k-{slug(task)}.png"
            plot_knn_curves(summary, task, plot_dir / name)
            blocks.append(Plot(f"plots/{name}", f"{task}: the kNN probe's validation "
                                f"{summary.knn_metric} at each k (mean over folds), mean over "
                                "seeds with a ± std band; the probe tests at the best k."))
    if training:
        blocks += [Heading(2, "Training"), TableBlock(training_table(training))]
        for task, by_method in training.items():
            name = f"training-{slug(task)}.png"
            plot_training(by_method, task, plot_dir / name)
            blocks.append(Plot(f"plots/{name}", f"{task}: loss and validation score per "
                                "epoch of each tuned method; one line style per seed."))
    blocks += search_blocks(run.sources)
    if run.options:
        blocks += [Heading(2, "Options"),
                   Paragraph("What every merged run's `compare` was asked for, of the options "
                             "that change results (results.json's options)." if run.runs else
                             "What `compare` was asked for (results.json's options): every "
                             "stage above was computed, or reused from disk, for these."),
                   Bullets(option_lines(run.options))]
    if run.notes:
        blocks += [Heading(2, "Notes"), Bullets(run.notes)]
    return blocks


def search_blocks(run_dirs: list[Path]) -> list[Block]:
    """`compare --search`: what each method's search found and what it cost, so a reader sees
    that every method had the same budget."""
    found = sorted(p for d in run_dirs for p in d.glob(f"{SEARCH_DIR}/*/*/best.json"))
    if not found:
        return []
    rows, params = [], []
    for path in found:
        doc = json.loads(path.read_text())
        budget = doc["budget"]
        rows.append([Cell(path.parent.parent.name), Cell(doc["method"]),
                     Cell(f"{budget['trials']} ({budget['pruned']} pruned)"),
                     Cell(str(budget["epochs_trained"])), Cell(f"{budget['seconds'] / 60:.1f}"),
                     Cell(f"{doc['valid_score']:.3f}")])
        params.append(f"{path.parent.parent.name} / {doc['method']}: " + ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in doc["params"].items()))
    table = Table(["task", "method", "trials", "epochs trained", "minutes", "best valid"],
                  rows, [None] * 6, names=2)
    return [Heading(2, "Hyperparameter search"),
            Paragraph("Each tuned method's configuration came from `contrastune search` on valid "
                      "(seeded TPE, successive-halving pruning on each epoch's valid score, the "
                      "same trials, sampler seed and pruner for every method; a k-fold task "
                      "searched on its first fold's roles, seed 0). Its best.json is what every "
                      "seed then trained with. The test split was not read."),
            TableBlock(table), Bullets(params)]


def shots_blocks(records: list[Record], plot_dir: Path) -> list[Block]:
    """Tasks run at more than one shots value: the score-vs-shots plot of each."""
    tasks = sorted(t for t in {r.task for r in records}
                   if len({r.shots for r in records if r.task == t}) > 1)
    if not tasks:
        return []
    blocks: list[Block] = [Heading(2, "Score vs shots")]
    for task in tasks:
        name = f"shots-{slug(task)}.png"
        plot_shots(records, task, plot_dir / name)
        blocks.append(Plot(f"plots/{name}", f"{task}: primary test score against train clips "
                           "per class ('all': every train clip) per method and probe, mean "
                           "over seeds with ± std error bars."))
    return blocks


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write RUN/report.md, RUN/index.html and RUN/plots/ for a compare run; returns the two
    pages. report.md ends with the mark of the results.json it was drawn from (drawn_from)."""
    run, results = load_run(Path(run_dir)), Path(run_dir) / RESULTS_FILE
    return render(run, drawn_from(results) + "\n" if results.is_file() else "")


def drawn_from(results_file: Path) -> str:
    """The line a compare run's report.md ends with: the results.json it was drawn from, by
    its bytes. A report without it, or with another's, is older than its results (a compare
    killed between writing the two, or a report of before the mark) and is drawn again."""
    digest = hashlib.sha256(results_file.read_bytes()).hexdigest()[:16]
    return f"<!-- drawn from results.json sha256:{digest} -->"


def report_is_current(run_dir: Path) -> bool:
    """Whether RUN/report.md was drawn from RUN/results.json as it is now."""
    md = Path(run_dir) / "report.md"
    return md.is_file() and md.read_text().rstrip().endswith(
        drawn_from(Path(run_dir) / RESULTS_FILE))


def write_merged_report(run_dirs: list[Path], out: Path) -> tuple[Path, Path]:
    """One report in OUT of several finished compare runs (load.merge_runs says which may be
    merged); returns its two pages. Nothing is written unless every run can be merged, and
    nothing it writes (OUT/report.md, index.html, plots/, paired/) may overlap a run read:
    OUT may hold the runs in subfolders, as docs/suite-verdict/ holds one run per task."""
    run_dirs, out = [Path(d) for d in run_dirs], Path(out)
    check_output_dir(out, "--out")
    for name in REPORT_FILES:
        for run_dir in run_dirs:
            if overlaps(out / name, run_dir):
                raise UserError(f"--out {out}: its {name} would overlap the input {run_dir}; "
                                "choose an output outside it")
    if (out / RESULTS_FILE).exists():
        raise UserError(f"--out {out}: holds a compare run, whose own report this would "
                        "replace; choose another folder")
    run = merge_runs(run_dirs, out)
    with exclusive(out):
        return render(run)


def render(run: ReportInput, trailer: str = "") -> tuple[Path, Path]:
    """Write run.path/report.md (`trailer` at its end), index.html and plots/. The plots folder
    is replaced whole and each page renamed into place, so a killed report leaves the previous
    one intact."""
    with atomic_dir(run.path / "plots") as plot_dir:
        blocks = build_report(run, plot_dir)
    md, page = run.path / "report.md", run.path / "index.html"
    write_text(md, markdown(blocks) + trailer)
    write_text(page, html_page(blocks, f"contrastune report: {run.path.name}"))
    return md, page

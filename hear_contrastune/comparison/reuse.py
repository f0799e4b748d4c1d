"""A comparison's progress read back from its small outputs: results.json and the per-clip
predictions files.

Why: a long comparison's models and embeddings are gigabytes and stay on the machine that made
them; what is kept (committed) is results.json, the predictions and the report. A later
`compare` on a folder holding only those skips every finished (task, shots, method, seed,
fold) instead of tuning it again. Its records are reused only when
- results.json's options agree with this run's on every option that changes results
  (comparison.options; which tasks, methods, seeds, folds, shots or probes ran may differ);
- the task's content key is the one results.json recorded for it: a hash of the metadata,
  vocabulary, split lists and the audio files' bytes (not sizes and mtimes, as a tuning run's
  key: a task rebuilt on another machine has new mtimes but, built by the same code, the same
  bytes);
- every probe asked for has its record there, and each record's predictions file reads back.
Otherwise the unit runs, each of its stages reusing what complete outputs it finds on disk.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hear_contrastune.comparison.options import first_difference
from hear_contrastune.comparison.results import Record, ResultsFile
from hear_contrastune.comparison.run_layout import HEAD, RESULTS_FILE, score_key
from hear_contrastune.data.task import Task
from hear_contrastune.errors import UserError
from hear_contrastune.probes.predictions import read_predictions

Unit = tuple[str, int, str, int, str]  # (task, shots, method, seed, fold): one tuned model


def task_key(task: Task) -> str:
    """sha256 of what a task's results depend on: metadata, vocabulary, every split's labels,
    and the bytes of each listed clip in every sample-rate folder the task has."""
    digest = hashlib.sha256(json.dumps(
        {"metadata": task.metadata, "vocabulary": task.vocabulary, "labels": task.split_labels},
        sort_keys=True).encode())
    rates = sorted(p for p in task.path.iterdir() if p.is_dir() and p.name.isdigit())
    for rate in rates:
        for split in task.splits:
            for filename, _ in task.examples(split):
                path = rate / split / filename
                digest.update(f"\0{rate.name}/{split}/{filename}\0".encode())
                if path.is_file():
                    with open(path, "rb") as f:
                        while block := f.read(2**20):
                            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Progress:
    """The records an earlier compare of this run folder finished, by unit, and the content
    key of each task they were computed on (empty when nothing may be reused)."""

    run: Path
    records: dict[Unit, list[Record]] = field(default_factory=dict)
    task_keys: dict[str, str] = field(default_factory=dict)

    def held(self, unit: Unit, key: str, probes: Sequence[str]) -> list[Record]:
        """The unit's records of `probes` held for a task of content `key`, in the order
        compare writes them (comparison.run_layout.SCORES)."""
        if self.task_keys.get(unit[0]) != key:
            return []
        return sorted((r for r in self.records.get(unit, []) if r.probe in probes),
                      key=lambda r: score_key(r.probe))

    def reuse(self, unit: Unit, key: str, probes: Sequence[str]) -> list[Record] | None:
        """`held` when it has every one of `probes`, each probe's with a readable predictions
        file; None when the unit must run."""
        kept = self.held(unit, key, probes)
        if {r.probe for r in kept} != set(probes):
            return None
        for r in kept:
            if r.probe == HEAD:
                continue  # the fine-tuned classifier's own score has no predictions file
            if not r.predictions:  # an older results.json: the verdict needs the file
                return None
            try:
                read_predictions(self.run / r.predictions)
            except UserError:
                return None
        return kept


def read_progress(run: Path, held: ResultsFile | None, options: dict[str, Any],
                  say: Callable[[str], None] = lambda _: None) -> Progress:
    """What RUN/results.json (`held`, None where there is none) lets a compare with `options`
    (results.json's form) reuse; `say` hears why nothing is, where it cannot serve."""
    if held is None:
        return Progress(run)
    if not held.options:
        say(f"{run / RESULTS_FILE}: records no options (an older compare): nothing reused "
            "from it")
        return Progress(run)
    diff = first_difference(held.options, options)
    if diff:
        say(f"{run / RESULTS_FILE}: nothing reused from it, its run had other options: {diff}")
        return Progress(run)
    records: dict[Unit, list[Record]] = {}
    for r in held.records:
        records.setdefault((r.task, r.shots, r.method, r.seed, r.fold), []).append(r)
    return Progress(run, records, held.task_keys)

"""A comparison's progress read back from its small outputs: results.json and the per-clip
predictions files.

Why: a long comparison's models and embeddings are gigabytes and stay on the machine that made
them; what is kept (committed) is results.json, the predictions and the report. A later
`compare` on a folder holding only those skips every finished (task, shots, method, seed,
fold) instead of tuning it again. Its records are reused only when
- results.json's options agree with this run's on every option that changes results
  (comparison.options; which tasks, methods, seeds, folds, shots or probes ran may differ);
- the task's content key (`Task.content_key`: metadata, vocabulary, split lists and the
  audio files' bytes, so a task rebuilt on another machine keeps it) is the one results.json
  recorded for it;
- every probe asked for has its record there, and each record's predictions file reads back.
Otherwise the unit runs, each of its stages reusing what complete outputs it finds on disk.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hear_contrastune.comparison.options import first_difference
from hear_contrastune.comparison.results import Record, ResultsFile
from hear_contrastune.comparison.run_layout import HEAD, RESULTS_FILE, score_key
from hear_contrastune.errors import UserError
from hear_contrastune.probes.predictions import read_predictions

Unit = tuple[str, int, str, int, str]  # (task, shots, method, seed, fold): one tuned model


@dataclass(frozen=True)
class Progress:
    """The records an earlier compare of this run folder finished, by unit, and the content
    key of each task they were computed on (empty when nothing may be reused)."""

    run: Path
    records: dict[Unit, list[Record]] = field(default_factory=dict)
    task_keys: dict[str, str] = field(default_factory=dict)

    def other_contents(self, keys: dict[str, str]) -> list[str]:
        """The tasks (of `keys`: name -> content key now) whose records were computed on other
        contents: none of their records is held (see `held`)."""
        return sorted(n for n, key in keys.items() if self.task_keys.get(n, key) != key)

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

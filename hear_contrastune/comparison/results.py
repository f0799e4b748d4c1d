"""results.json: one record per (task, method, seed, probe), written by `compare`, read by the
report and the summary table."""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hear_contrastune.atomic import write_json
from hear_contrastune.errors import UserError


@dataclass(frozen=True)
class Record:
    """A probe's primary test score for one (task, method, seed)."""

    task: str
    method: str
    seed: int
    probe: str
    metric: str
    score: float


def write_results(path: Path, records: list[Record]) -> None:
    """Write the records as a JSON list, atomically."""
    write_json(path, [asdict(r) for r in records])


def load_results(path: Path) -> list[Record]:
    """results.json's records; a malformed file is a one-line UserError (it is the report's
    main input, and a silent skip would make a wrong table)."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, list):
        raise UserError(f"{path}: expected a JSON list of records")
    records, seen = [], set()
    for i, r in enumerate(raw):
        try:
            score = math.nan if r["score"] is None else float(r["score"])
            rec = Record(str(r["task"]), str(r["method"]), int(r["seed"]), str(r["probe"]),
                         str(r["metric"]), score)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: record {i} is not {{task, method, seed, probe, metric, "
                            f"score}} ({type(e).__name__}: {e})") from None
        key = (rec.task, rec.method, rec.seed, rec.probe)
        if key in seen:
            raise UserError(f"{path}: two records for task {rec.task!r}, method {rec.method!r}, "
                            f"seed {rec.seed}, probe {rec.probe!r}")
        seen.add(key)
        records.append(rec)
    return records

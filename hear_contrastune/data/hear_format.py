"""HEAR's task-folder format, owned in one place: file names, metadata, label vocabulary.

A task folder (hearpreprocess's output) and an embeddings folder (heareval's) share these:

    task_metadata.json       task_name, embedding_type, prediction_type, split_mode,
                             sample_duration, splits, evaluation, ...
    labelvocabulary.csv      idx,label
    <split>.json             {filename: [label, ...]}

heareval reads them with bare asserts and KeyErrors; here every mistake is a one-line
`UserError` naming the file, found when the folder is opened rather than hours into a run.
`HearFolder` is what both kinds of folder have in common; `data.task.Task` adds the audio and
`data.embeddings.EmbeddedTask` the embedding files.
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from hear_contrastune.errors import UserError

METADATA_FILE = "task_metadata.json"
VOCABULARY_FILE = "labelvocabulary.csv"
PREDICTION_TYPES = ("multiclass", "multilabel")
KFOLD_MODES = ("new_split_kfold", "presplit_kfold")
SPLIT_MODES = ("trainvaltest", *KFOLD_MODES)
# The keys heareval's embedding and prediction runners index without a default.
REQUIRED_KEYS = (
    "task_name",
    "embedding_type",
    "prediction_type",
    "split_mode",
    "sample_duration",
    "splits",
    "evaluation",
)
Roles = dict[str, list[str]]  # {"train": [...], "valid": [...], "test": [...]}


def split_file(split: str) -> str:
    """The name of a split's label file."""
    return f"{split}.json"


def read_json(path: Path) -> object:
    """A JSON file's contents, or one line saying why it cannot be read."""
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def check_metadata(meta_file: Path, metadata: object) -> dict:
    """The metadata as a dict, or a UserError for the first thing heareval would trip on."""
    if not isinstance(metadata, dict):
        raise UserError(f"{meta_file}: expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in metadata:
            raise UserError(f"{meta_file}: missing key '{key}'")
    if metadata["embedding_type"] != "scene":
        raise UserError(
            f"{meta_file}: embedding_type {metadata['embedding_type']!r}: "
            "only scene tasks are supported"
        )
    if metadata["prediction_type"] not in PREDICTION_TYPES:
        raise UserError(
            f"{meta_file}: prediction_type {metadata['prediction_type']!r}: "
            f"expected one of {', '.join(PREDICTION_TYPES)}"
        )
    duration = metadata["sample_duration"]  # null: clips keep their own lengths (FSD50K)
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, int | float) or duration <= 0):
        raise UserError(f"{meta_file}: sample_duration {duration!r}: expected seconds > 0 "
                        "or null (clips of varying length)")
    splits = metadata["splits"]
    if (
        not isinstance(splits, list)
        or not splits
        or not all(isinstance(s, str) and s for s in splits)
    ):
        raise UserError(f"{meta_file}: splits {splits!r}: expected a list of split names")
    if len(set(splits)) != len(splits):
        raise UserError(f"{meta_file}: splits {splits!r} repeat a name")
    return metadata


def read_vocabulary(path: Path) -> list[str]:
    """Labels in index order from heareval's `idx,label` CSV, checked.

    Read as CSV (a label may be quoted, `0,"a,b"`), and refused where heareval, which reads the
    file with pandas and takes each label as `str()` of what pandas made of it, would read
    another label: `01` (the number 1), `NA` or an empty label (NaN), or an unquoted `0,a,b`.
    """
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows or rows[0] != ["idx", "label"]:
        raise UserError(f"{path}: the first row must be 'idx,label' (heareval reads the columns "
                        "by these names)")
    pairs = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise UserError(f"{path}: row {n} has {len(row)} fields, expected 'idx,label' "
                            "(quote a label that holds a comma)")
        try:
            pairs.append((int(row[0]), row[1]))
        except ValueError:
            raise UserError(f"{path}: row {n}: index {row[0]!r} is not a whole number") from None
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise UserError(f"{path}: indices are not 0..{len(pairs) - 1}")
    vocabulary = [label for _, label in pairs]
    if not vocabulary:
        raise UserError(f"{path}: no labels")
    if len(set(vocabulary)) != len(vocabulary):
        dup = next(x for x in vocabulary if vocabulary.count(x) > 1)
        raise UserError(f"{path}: label {dup!r} appears twice")
    for label, theirs in zip(vocabulary, heareval_labels(text), strict=True):
        if label != theirs:
            raise UserError(f"{path}: label {label!r} is read by heareval (pandas) as "
                            f"{theirs!r}; rename it (e.g. give it a letter)")
    return vocabulary


def heareval_labels(text: str) -> list[str]:
    """The labels, in index order, as heareval reads labelvocabulary.csv: pandas' read_csv, the
    label column as str (heareval.score.label_vocab_as_dict)."""
    import pandas as pd  # heareval's own reader; imported here, where it is needed

    frame = pd.read_csv(io.StringIO(text))
    if list(frame.columns) != ["idx", "label"]:
        return [""] * len(frame)  # an unquoted comma shifted the columns: nothing matches
    frame = frame.sort_values("idx")
    return [str(label) for label in frame["label"]]


def vocabulary_csv(vocabulary: list[str]) -> str:
    """labelvocabulary.csv's text for labels in index order, quoted where CSV needs it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["idx", "label"])
    writer.writerows(enumerate(vocabulary))
    return out.getvalue()


def vocabulary_problem(vocabulary: list[str]) -> str | None:
    """Why these labels cannot go in labelvocabulary.csv as they are (heareval would read one
    of them as another label), or None: what a task builder checks before writing."""
    for label in vocabulary:
        if not label or "\n" in label or "\r" in label:
            return f"label {label!r} is empty or holds a line break"
    for label, theirs in zip(vocabulary, heareval_labels(vocabulary_csv(vocabulary)),
                             strict=True):
        if label != theirs:
            return f"label {label!r} is read by heareval (pandas) as {theirs!r}"
    return None


@dataclass(frozen=True)
class HearFolder:
    """What a task folder and an embeddings folder share: checked metadata and vocabulary."""

    path: Path
    metadata: dict
    vocabulary: list[str]  # labels in index order

    @property
    def name(self) -> str:
        return str(self.metadata["task_name"])

    @property
    def metadata_file(self) -> Path:
        return self.path / METADATA_FILE

    @property
    def prediction_type(self) -> str:
        return str(self.metadata["prediction_type"])

    @property
    def multilabel(self) -> bool:
        return self.prediction_type == "multilabel"

    @property
    def kfold(self) -> bool:
        return self.metadata["split_mode"] in KFOLD_MODES

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["splits"])

    @property
    def duration(self) -> float | None:
        """Seconds per clip, or None when clips keep their own lengths."""
        d = self.metadata["sample_duration"]
        return None if d is None else float(d)

    @property
    def evaluation(self) -> list[str]:
        return list(self.metadata["evaluation"])


def fold_roles(task: HearFolder) -> list[Roles]:
    """heareval's data splits for the task, in heareval's order.

    trainvaltest: one split, train/valid/test by name. k-fold: folds sorted by name; fold i is
    the test set, fold i+1 (wrapping) the validation set, the others train
    (heareval.predictions.task_predictions.get_splits_from_metadata).
    """
    meta_file = task.metadata_file
    mode = task.metadata.get("split_mode")
    if mode == "trainvaltest":
        missing = [s for s in ("train", "valid", "test") if s not in task.splits]
        if missing:
            raise UserError(f"{meta_file}: split_mode trainvaltest but no {missing[0]!r} split")
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    if mode in KFOLD_MODES:
        folds = sorted(str(s) for s in task.splits)
        if len(set(folds)) != len(folds):
            raise UserError(f"{meta_file}: fold names in 'splits' are not unique")
        if len(folds) < 3:
            raise UserError(f"{meta_file}: {mode} with {len(folds)} folds; needs at least 3 "
                            "(one to test, one to validate, the rest to train)")
        roles = []
        for i, test in enumerate(folds):
            valid = folds[(i + 1) % len(folds)]
            train = [f for f in folds if f not in (test, valid)]
            roles.append({"train": train, "valid": [valid], "test": [test]})
        return roles
    raise UserError(f"{meta_file}: split_mode {mode!r}: expected one of {', '.join(SPLIT_MODES)}")


def roles_for_fold(task: HearFolder, fold: str) -> Roles:
    """The roles that test on `fold` ("" for a train/valid/test task's one set of roles)."""
    roles = fold_roles(task)
    if not task.kfold:
        if fold:
            raise UserError(f"--fold {fold}: {task.path} is a train/valid/test task, not k-fold")
        return roles[0]
    if not fold:
        raise UserError(f"{task.path}: a k-fold task; choose a test fold with --fold "
                        f"({', '.join(r['test'][0] for r in roles)})")
    for role in roles:
        if role["test"] == [fold]:
            return role
    raise UserError(f"--fold {fold}: not a fold of {task.path} "
                    f"({', '.join(r['test'][0] for r in roles)})")


def read_folder(path: Path, what: str) -> tuple[dict, list[str]]:
    """Checked (metadata, vocabulary) of a HEAR folder; `what` names its kind in errors
    ("a HEAR task directory", "an embeddings directory")."""
    if not path.is_dir():
        raise UserError(f"{path}: no such directory (expected {what})")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise UserError(f"{meta_file}: missing (not {what})")
    metadata = check_metadata(meta_file, read_json(meta_file))
    return metadata, read_vocabulary(path / VOCABULARY_FILE)


def is_hear_folder(path: Path) -> bool:
    """Whether `path` looks like a HEAR task or embeddings folder (has task metadata)."""
    return (path / METADATA_FILE).is_file()

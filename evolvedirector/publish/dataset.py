"""`evolvedirector export-dataset`: the curated set of a round as a Hugging Face `imagefolder`.

```
OUT/README.md          the dataset card: how the set was made (publish/cards.py)
OUT/metadata.jsonl     one row per image (FIELDS)
OUT/00000042.png       the teacher image sample 42 trains on: named by sample id, stable and unique
OUT/NAME.LICENSE       the prompt file's license, passed on with its prompts (a prompt-file run)
```

`datasets.load_dataset("imagefolder", data_dir=OUT)` loads it as it is. The set is the one of
version R (the store's samples added by R and not deleted by R); `with_deleted` adds the samples
deleted by R, with the round they left in. Nothing after R shows: a later deletion or verdict
is not part of version R. Images are copied, not linked: a hard link would let an edit of the
export change the run's content-addressed image; each is checked against its hash on the way.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from evolvedirector.publish.cards import dataset_card
from evolvedirector.publish.facts import RunFacts
from evolvedirector.store import ImageStore, Sample, Store
from evolvedirector.store.folders import staged_folder

FIELDS = {
    "file_name": "the image (the teacher image the student trains on for this prompt)",
    "sample_id": "the sample's id in the run's store (evolve.db)",
    "prompt": "the caption",
    "category": "the world's category (the shapes world's domain, or the prompt file's category)",
    "teacher": "the teacher whose image the director chose",
    "chosen_among": "the teachers whose images the director chose among (one: the only teacher asked)",
    "operation": "how the prompt entered the set: seed, expand (similar to a parent the student failed) or "
                 "mutate (unrelated, after a parent was learned)",
    "round_added": "the round it entered the set",
    "round_deleted": "the round the director deleted it as learned; null while in the set",
    "parent_id": "the sample it was expanded or mutated from; null for a seed prompt",
    "parent_prompt": "that sample's prompt; null for a seed prompt",
    "verdicts": "the director's discriminations of this sample up to the round, as lists: round, winner "
                "(student or teacher), action (delete, expand or keep), student_shown_first",
}
# Columns that are null or empty in some rows. `datasets` types each column from the first 10 MiB
# of metadata.jsonl, and one that holds no value there is typed null: its first value after that
# fails the load. (Verdicts are lists per field, not a list of records, because pyarrow cannot turn
# an empty list into a list of records read later in the same file.)
SPARSE_COLUMNS = ("round_deleted", "parent_id", "parent_prompt", "verdicts")
DATASETS_FIRST_READ = 10 << 20  # bytes of metadata.jsonl that datasets infers the columns from


class DatasetExportError(ValueError):
    """An export that cannot be written; the message names the sample or file."""


@dataclass(frozen=True)
class ExportedDataset:
    out: Path
    at_round: int
    active: int  # samples in the set of the round
    deleted: int  # samples deleted by the round (exported with with_deleted only)


def export_dataset(run_dir: Path, out: Path, *, at_round: int | None = None,
                   with_deleted: bool = False) -> ExportedDataset:
    """Write OUT whole or not at all; raises NotCommitted, ConfigError, DatasetExportError or
    FileExistsError (OUT holds something)."""
    run_dir = Path(run_dir)
    store = Store(run_dir / "evolve.db")
    try:
        facts = RunFacts.read(run_dir, store, at_round)
        at_round = facts.at_round
        samples = store.samples_added_up_to(at_round) if with_deleted else facts.active
        rows = _rows(samples, store, at_round)
    finally:
        store.close()
    deleted = sum(row["round_deleted"] is not None for row in rows)
    license_file = facts.prompt_source().license_file
    images = ImageStore(run_dir / "images")
    with staged_folder(out) as staging:
        for sample, row in zip(samples, rows):
            try:
                data = images.read_bytes(sample.image_hash)
            except (FileNotFoundError, ValueError) as error:
                raise DatasetExportError(f"sample {sample.id} ({sample.prompt!r}): {error}") from None
            (staging / row["file_name"]).write_bytes(data)
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in typed_first(rows)]
        (staging / "metadata.jsonl").write_text("".join(lines), encoding="utf-8")
        if license_file is not None:
            shutil.copyfile(license_file, staging / license_file.name)
        card = dataset_card(facts, fields=FIELDS, with_deleted=with_deleted, deleted=deleted)
        (staging / "README.md").write_text(card, encoding="utf-8")
    return ExportedDataset(Path(out), at_round, len(rows) - deleted, deleted)


def _rows(samples: list[Sample], store: Store, at_round: int) -> list[dict]:
    prompts = {sample.id: sample.prompt for sample in store.all_samples()}
    verdicts: dict[int, list[dict]] = {}
    for verdict in store.all_verdicts():
        if verdict["round"] <= at_round:
            verdicts.setdefault(verdict["sample_id"], []).append(verdict)
    candidates: dict[int, list[str]] = {}
    for candidate in store.all_candidates():
        candidates.setdefault(candidate["sample_id"], []).append(candidate["teacher"])
    rows = []
    for sample in samples:
        judged = sorted(verdicts.get(sample.id, []), key=lambda v: v["id"])
        gone = sample.round_deleted is not None and sample.round_deleted <= at_round  # a later deletion is not R's
        rows.append({
            "file_name": f"{sample.id:08d}.png",
            "sample_id": sample.id,
            "prompt": sample.prompt,
            "category": sample.domain,
            "teacher": sample.teacher,
            "chosen_among": candidates.get(sample.id) or [sample.teacher],
            "operation": sample.operation,
            "round_added": sample.round_added,
            "round_deleted": sample.round_deleted if gone else None,
            "parent_id": sample.parent_id,
            "parent_prompt": prompts.get(sample.parent_id),
            "verdicts": {
                "round": [v["round"] for v in judged],
                "winner": [v["winner"] for v in judged],
                "action": [v["action"] for v in judged],
                "student_shown_first": [bool(v["student_shown_first"]) for v in judged],
            },
        })
    return rows


def typed_first(rows: list[dict], first_read: int = DATASETS_FIRST_READ) -> list[dict]:
    """The rows in id order, except that a sparse column with no value in the first `first_read`
    bytes has its first row with a value moved to the front (see SPARSE_COLUMNS)."""
    seen, size = set(), 0
    for row in rows:
        if size >= first_read:
            break
        size += len(json.dumps(row, ensure_ascii=False).encode()) + 1
        seen.update(column for column in SPARSE_COLUMNS if _has_value(row[column]))
    witnesses = []
    for column in SPARSE_COLUMNS:
        if column not in seen:
            witness = next((row for row in rows if _has_value(row[column])), None)
            if witness is not None and all(witness is not w for w in witnesses):
                witnesses.append(witness)
                seen.update(c for c in SPARSE_COLUMNS if _has_value(witness[c]))
    return witnesses + [row for row in rows if all(row is not w for w in witnesses)]


def _has_value(value) -> bool:
    if isinstance(value, dict):
        return any(value.values())
    return value is not None

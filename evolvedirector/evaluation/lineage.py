"""Why is this image in my training set? A sample's lineage, told from the store.

Each sample entered the set one of three ways, and the store keeps what caused it:
- `seed`: a random prompt of round 0;
- `expand`: in round r the director preferred the teacher's image of its parent to the student's
  (the parent's verdict of round r, action `expand`), and asked for similar prompts;
- `mutate`: in round r the student's image of its parent was judged as good as the teacher's
  (the parent was deleted as learned), and an unrelated prompt was drawn to keep exploring.
Its image is the one teacher's the director chose among the candidates (selection), or the only
teacher asked. Later verdicts on the sample itself say whether it was kept, expanded or deleted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from evolvedirector.store import Sample, Store


@dataclass
class Step:
    """One sample of a chain and the story of how it got there."""

    sample: Sample
    origin: str  # how it entered the set
    selection: str  # whose image it trains on, and who it was chosen among
    cause: dict | None = None  # the verdict on the parent that led to this sample
    candidates: list[dict] = field(default_factory=list)  # {teacher, image_hash, chosen}
    judgements: list[dict] = field(default_factory=list)  # verdicts on this sample itself, by round
    fate: str = ""  # still in the set, or when and why it left


class LineageIndex:
    """All samples, verdicts and candidates of a run, indexed once for many lineage lookups."""

    def __init__(self, samples: list[Sample], verdicts: list[dict], candidates: list[dict]):
        self.samples = {s.id: s for s in samples}
        self.verdicts: dict[int, list[dict]] = defaultdict(list)
        for verdict in verdicts:
            self.verdicts[verdict["sample_id"]].append(verdict)
        self.candidates: dict[int, list[dict]] = defaultdict(list)
        for candidate in candidates:
            self.candidates[candidate["sample_id"]].append(candidate)

    @classmethod
    def from_store(cls, store: Store) -> LineageIndex:
        return cls(store.all_samples(), store.all_verdicts(), store.all_candidates())

    def chain(self, sample_id: int) -> list[Step]:
        """The sample and its ancestors, newest first, each with its reasons."""
        if sample_id not in self.samples:
            raise KeyError(f"no sample with id {sample_id}")
        steps = []
        current: int | None = sample_id
        seen = set()
        while current is not None and current not in seen:  # a cycle cannot be written, but never loop
            seen.add(current)
            sample = self.samples[current]
            steps.append(self.step(sample))
            current = sample.parent_id
        return steps

    def step(self, sample: Sample) -> Step:
        cause = None
        if sample.operation == "seed":
            origin = f"seed prompt of round {sample.round_added}, drawn at random when the run started"
        else:
            parent = self.samples.get(sample.parent_id)
            cause = next(
                (v for v in self.verdicts.get(sample.parent_id, []) if v["round"] == sample.round_added), None
            )
            parent_text = f"sample #{sample.parent_id}" + (f" (“{parent.prompt}”)" if parent else "")
            verdict_text = f" (verdict #{cause['id']})" if cause else ""
            if sample.operation == "expand":
                teacher = f" ({parent.teacher})" if parent else ""
                origin = (
                    f"expanded in round {sample.round_added} from {parent_text}: the director preferred the "
                    f"teacher's image{teacher} to the student's{verdict_text}, so it asked for similar prompts"
                )
            else:
                kept = "deleted as learned" if cause is None or cause["action"] == "delete" else "kept"
                origin = (
                    f"mutated in round {sample.round_added} from {parent_text}: the student's image was judged "
                    f"as good as the teacher's{verdict_text}, the parent was {kept}, and an unrelated prompt "
                    "was drawn to keep the set exploring"
                )
        candidates = sorted(self.candidates.get(sample.id, []), key=lambda c: c["teacher"])
        if len(candidates) > 1:
            names = ", ".join(c["teacher"] for c in candidates)
            selection = f"trains on {sample.teacher}'s image, chosen by the director among {names}"
        else:
            selection = f"trains on {sample.teacher}'s image (the only teacher asked)"
        judgements = sorted(self.verdicts.get(sample.id, []), key=lambda v: v["round"])
        if sample.round_deleted is None:
            fate = "in the active set"
        else:
            deleting = next((v for v in judgements if v["round"] == sample.round_deleted), None)
            fate = f"deleted in round {sample.round_deleted}: the student's image was judged as good as the teacher's"
            if deleting:
                fate += f" (verdict #{deleting['id']})"
        return Step(sample, origin, selection, cause, candidates, judgements, fate)


def describe_verdict(verdict: dict) -> str:
    """Round r: teacher won -> expand (student shown first)."""
    order = "student shown first" if verdict["student_shown_first"] else "teacher shown first"
    return f"round {verdict['round']}: {verdict['winner']} won, {verdict['action']} ({order}; verdict #{verdict['id']})"

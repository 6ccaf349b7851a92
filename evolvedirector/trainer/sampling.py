"""Which samples each process trains on at each step.

A global batch is `batch_size x num_processes` samples; process r takes the r-th slice. The
whole draw is a pure function of (seed, step, the set), made with a generator seeded from those
alone: every process computes the same global batch without talking to the others, the slices
are disjoint, and the step is the whole data position, so a resumed run draws exactly the
batches that an uninterrupted one would have.

Every batch comes from one shape bucket, so images in it share a shape (and a token count): a
step first picks a bucket, with probability proportional to the samples in it (so each sample
is equally likely overall), then samples within it, without replacement when the bucket holds a
whole global batch. Single-scale training (the 512-px first stage, the shapes world's canvas) is
the same with one bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evolvedirector.seeds import seed_for
from evolvedirector.student.buckets import nearest_bucket


class BucketBatchSampler:
    def __init__(self, sizes: Sequence[tuple[int, int]], buckets: Sequence[tuple[int, int]], batch_size: int,
                 num_processes: int = 1, seed: int = 0, weights: Sequence[float] | None = None):
        """`weights`: each sample's relative chance of being drawn (None: all equal)."""
        if not sizes:
            raise ValueError("cannot sample batches from an empty set")
        if weights is not None and (len(weights) != len(sizes) or not all(w > 0 for w in weights)):
            raise ValueError(f"need one positive weight per sample ({len(sizes)}), got {len(weights)}")
        if batch_size < 1 or num_processes < 1:
            raise ValueError(f"batch_size and num_processes must be >= 1, got {batch_size}, {num_processes}")
        self.buckets = tuple(buckets)
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.seed = seed
        members: dict[tuple[int, int], list[int]] = {}
        for index, (height, width) in enumerate(sizes):
            members.setdefault(nearest_bucket(height, width, self.buckets), []).append(index)
        self.bucket_of_group = [bucket for bucket in self.buckets if bucket in members]
        self.members = [torch.tensor(members[bucket]) for bucket in self.bucket_of_group]
        self.sample_weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.weights = torch.stack([  # a bucket's chance: its share of all the weight
            torch.tensor(float(len(m)), dtype=torch.float64) if weights is None else self.sample_weights[m].sum()
            for m in self.members
        ])

    def global_batch(self, step: int) -> tuple[tuple[int, int], torch.Tensor]:
        """(bucket, indices of batch_size x num_processes samples) for this step; the same everywhere."""
        generator = torch.Generator().manual_seed(seed_for(self.seed, "batch", step))
        group = int(torch.multinomial(self.weights, 1, generator=generator)) if len(self.members) > 1 else 0
        members = self.members[group]
        wanted = self.batch_size * self.num_processes
        if self.sample_weights is not None:
            # With replacement: drawn without it, a heavily weighted small group runs out within a
            # batch and gets less than its share.
            within = torch.multinomial(self.sample_weights[members], wanted, replacement=True, generator=generator)
            return self.bucket_of_group[group], members[within]
        if len(members) >= wanted:
            chosen = torch.randperm(len(members), generator=generator)[:wanted]
        else:  # a small set: repeats are unavoidable
            chosen = torch.randint(0, len(members), (wanted,), generator=generator)
        return self.bucket_of_group[group], members[chosen]

    def local_batch(self, step: int, rank: int) -> tuple[tuple[int, int], torch.Tensor]:
        """This process's slice of the step's global batch."""
        if not 0 <= rank < self.num_processes:
            raise ValueError(f"rank {rank} is outside 0..{self.num_processes - 1}")
        bucket, indices = self.global_batch(step)
        return bucket, indices[rank * self.batch_size : (rank + 1) * self.batch_size]

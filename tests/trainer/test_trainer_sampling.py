"""Batches of one aspect bucket, the same on every process, a disjoint shard each."""

from collections import Counter

import numpy as np
import pytest
import torch

from evolvedirector.student.buckets import ASPECT_BUCKETS_1024, SINGLE_SCALE_512, nearest_bucket
from evolvedirector.seeds import seed_for
from evolvedirector.trainer.sampling import BucketBatchSampler


def synthetic_sizes(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Photos of many shapes: height/width from 0.4 to 2.5 (beyond the buckets at both ends)."""
    rng = np.random.default_rng(seed)
    ratios = np.exp(rng.uniform(np.log(0.4), np.log(2.5), n))
    widths = rng.integers(600, 1600, n)
    return [(int(w * r), int(w)) for r, w in zip(ratios, widths)]


def test_every_batch_comes_from_one_bucket_and_buckets_follow_their_share():
    sizes = synthetic_sizes(2000)
    sampler = BucketBatchSampler(sizes, ASPECT_BUCKETS_1024, batch_size=4, num_processes=2, seed=7)
    share = Counter(nearest_bucket(h, w) for h, w in sizes)
    seen = Counter()
    for step in range(600):
        bucket, indices = sampler.global_batch(step)
        assert bucket in ASPECT_BUCKETS_1024 and len(indices) == 8
        assert {nearest_bucket(*sizes[i]) for i in indices.tolist()} == {bucket}
        assert len(set(indices.tolist())) == 8  # large buckets: no sample twice in a batch
        seen[bucket] += 1
    # Both extreme buckets take the images beyond 0.5 and 2.0; many buckets are used.
    assert seen[(704, 1408)] > 0 and seen[(1408, 704)] > 0 and len(seen) >= 15
    for bucket, count in share.most_common(3):
        assert seen[bucket] / 600 == pytest.approx(count / len(sizes), abs=0.05)


def test_shards_are_disjoint_halves_of_the_same_global_batch_and_deterministic():
    sizes = synthetic_sizes(300)
    one = BucketBatchSampler(sizes, ASPECT_BUCKETS_1024, batch_size=3, num_processes=2, seed=1)
    other = BucketBatchSampler(sizes, ASPECT_BUCKETS_1024, batch_size=3, num_processes=2, seed=1)
    for step in (0, 1, 17, 10_000):
        bucket, full = one.global_batch(step)
        (b0, rank0), (b1, rank1) = one.local_batch(step, 0), other.local_batch(step, 1)
        assert b0 == b1 == bucket
        assert torch.equal(torch.cat([rank0, rank1]), full)
        assert not set(rank0.tolist()) & set(rank1.tolist())
    # Another seed or another step draws other batches.
    reseeded = BucketBatchSampler(sizes, ASPECT_BUCKETS_1024, batch_size=3, num_processes=2, seed=2)
    assert any(not torch.equal(one.global_batch(s)[1], reseeded.global_batch(s)[1]) for s in range(5))
    assert not torch.equal(one.global_batch(0)[1], one.global_batch(1)[1])
    with pytest.raises(ValueError, match="rank 2"):
        one.local_batch(0, 2)


def test_single_scale_and_small_sets():
    # The 512-px first stage: every image goes to the one square bucket.
    sampler = BucketBatchSampler(synthetic_sizes(50), SINGLE_SCALE_512, batch_size=8, seed=0)
    assert {sampler.global_batch(s)[0] for s in range(20)} == {(512, 512)}
    # Fewer samples than a global batch: repeats, but still only from the set.
    small = BucketBatchSampler([(32, 32)] * 3, ((32, 32),), batch_size=4, num_processes=2)
    bucket, indices = small.global_batch(0)
    assert bucket == (32, 32) and len(indices) == 8 and set(indices.tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="empty"):
        BucketBatchSampler([], ((32, 32),), batch_size=1)


def test_seeds_for_nearby_steps_and_ranks_are_unrelated():
    seeds = {seed_for(0, "noise", step, rank) for step in range(100) for rank in range(4)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)


def test_weights_give_each_group_its_share_of_the_draws():
    # 90 samples of one kind and 10 of another, weighted 1/90 and 1/10: half the draws each.
    sizes = [(32, 32)] * 100
    weights = [1 / 90] * 90 + [1 / 10] * 10
    sampler = BucketBatchSampler(sizes, ((32, 32),), batch_size=16, seed=3, weights=weights)
    drawn = torch.cat([sampler.global_batch(step)[1] for step in range(200)])
    minority = (drawn >= 90).float().mean().item()
    assert 0.45 < minority < 0.55
    unweighted = BucketBatchSampler(sizes, ((32, 32),), batch_size=16, seed=3)
    drawn = torch.cat([unweighted.global_batch(step)[1] for step in range(200)])
    assert (drawn >= 90).float().mean().item() < 0.15
    with pytest.raises(ValueError, match="positive weight"):
        BucketBatchSampler(sizes, ((32, 32),), batch_size=4, weights=[1.0] * 99)

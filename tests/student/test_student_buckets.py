import pytest

from evolvedirector.student.buckets import ASPECT_BUCKETS_1024, SINGLE_SCALE_512, buckets_at, nearest_bucket


def test_twenty_buckets_follow_pixarts_rule():
    assert len(ASPECT_BUCKETS_1024) == len(set(ASPECT_BUCKETS_1024)) == 20
    ratios = [h / w for h, w in ASPECT_BUCKETS_1024]
    assert ratios == sorted(ratios) and min(ratios) == 0.5 and max(ratios) == 2.0
    for h, w in ASPECT_BUCKETS_1024:
        assert h % 64 == 0 and w % 64 == 0
        assert 0.9 * 1024**2 <= h * w <= 1024**2


def test_the_rule_admits_one_more_shape_than_pixarts_table():
    by_rule = {
        (h, w) for h in range(64, 2049, 64) for w in range(64, 2049, 64)
        if 0.5 <= h / w <= 2.0 and 0.9 * 1024**2 <= h * w <= 1024**2
    }
    assert by_rule - set(ASPECT_BUCKETS_1024) == {(1344, 704)}
    assert set(ASPECT_BUCKETS_1024) <= by_rule


def test_buckets_are_diffusers_pixart_table_between_half_and_double():
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN

    def within(table):
        return tuple((int(h), int(w)) for key, (h, w) in table.items() if 0.5 <= float(key) <= 2.0)

    assert within(ASPECT_RATIO_1024_BIN) == ASPECT_BUCKETS_1024
    assert within(ASPECT_RATIO_512_BIN) == buckets_at(512)
    assert SINGLE_SCALE_512 == ((512, 512),)


@pytest.mark.parametrize("height,width,bucket", [
    (1024, 1024, (1024, 1024)), (480, 640, (832, 1152)), (1080, 1920, (768, 1344)),
    (1920, 1080, (1344, 768)), (100, 1000, (704, 1408)), (3000, 1000, (1408, 704)), (512, 512, (1024, 1024)),
])
def test_nearest_bucket_by_aspect_ratio(height, width, bucket):
    assert nearest_bucket(height, width) == bucket


def test_nearest_bucket_among_other_buckets_and_bad_input():
    assert nearest_bucket(300, 600, buckets_at(64)) == (44, 88)
    assert nearest_bucket(32, 32, SINGLE_SCALE_512) == (512, 512)
    with pytest.raises(ValueError, match="positive"):
        nearest_bucket(0, 10)
    with pytest.raises(ValueError, match="multiple of 16"):
        buckets_at(100)

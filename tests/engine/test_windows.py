import pytest

from vera.errors import BadInput
from vera.windows import blend_weights, plan_windows, window_seed


def test_short_shot_is_one_window():
    assert [(w.first, w.last) for w in plan_windows(1001, 1010, 17, 4)] == [(1001, 1010)]


def test_windows_cover_every_frame_with_weights_summing_to_one():
    windows = plan_windows(1001, 1100, 17, 4)
    assert all(len(w) == 17 for w in windows)
    assert windows[0].first == 1001 and windows[-1].last == 1100
    for f in range(1001, 1101):
        weights = blend_weights(windows, f)
        assert 1 <= len(weights) <= 2
        assert sum(w for _, w in weights) == pytest.approx(1.0)


def test_crossfade_ramps_from_earlier_to_later_window():
    windows = plan_windows(1, 30, 17, 4)
    a, b = windows[0], windows[1]
    first_overlap = blend_weights(windows, b.first)
    last_overlap = blend_weights(windows, a.last)
    assert dict(first_overlap)[a.index] > dict(last_overlap)[a.index]
    assert dict(blend_weights(windows, a.first)) == {a.index: 1.0}


@pytest.mark.parametrize("window,overlap", [(17, 9), (17, -1), (0, 0)])
def test_bad_overlap_is_bad_input(window, overlap):
    with pytest.raises(BadInput):
        plan_windows(1, 100, window, overlap)


def test_window_seeds_are_distinct_and_stable():
    seeds = [window_seed(42, i) for i in range(10)]
    assert len(set(seeds)) == 10
    assert window_seed(42, 3) == window_seed(42, 3)

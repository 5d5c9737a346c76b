"""albert_edge/stats.py: the paired interval and McNemar's test on constructions whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from albert_edge.stats import format_diff, mcnemar_exact_p, paired_bootstrap_diff, paired_summary


def _pair(n: int, only_a: int, only_b: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows where only a is right, only b is right, both are right, then neither."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:only_a] = True
    b[only_a : only_a + only_b] = True
    a[only_a + only_b : only_a + only_b + both] = b[only_a + only_b : only_a + only_b + both] = True
    return a, b


def test_identical_vectors_give_a_zero_interval():
    a = np.random.default_rng(1).random(872) < 0.9
    assert paired_bootstrap_diff(a, a.copy()) == (0.0, 0.0, 0.0)
    assert mcnemar_exact_p(a, a) == 1.0


def test_known_construction_gives_the_exact_difference_inside_its_interval():
    a, b = _pair(1000, only_a=30, only_b=10, both=850)  # a: 88.0 %, b: 86.0 %
    diff, lo, hi = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(0.02)
    assert lo < 0.02 < hi and lo > 0  # 20 more right of 40 discordant rows: clearly better
    # the pairing matters: the sd of a paired difference here is sqrt(40)/1000 ~ 0.0063
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(40) / 1000, rel=0.15)
    assert paired_bootstrap_diff(b, a)[0] == pytest.approx(-0.02)


def test_string_and_bool_inputs_agree_and_seed_makes_it_repeatable():
    a, b = _pair(300, 12, 5, 250)
    s_a = "".join("1" if x else "0" for x in a)
    s_b = "".join("1" if x else "0" for x in b)
    assert paired_bootstrap_diff(s_a, s_b) == paired_bootstrap_diff(a, b) == paired_bootstrap_diff(a.astype(int), b.astype(int))


def test_intervals_shrink_with_more_rows():
    widths = []
    for n in (200, 800, 3200):
        a, b = _pair(n, only_a=n // 20, only_b=n // 40, both=int(n * 0.8))
        _, lo, hi = paired_bootstrap_diff(a, b)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.25)  # 1/sqrt(n)


def test_mcnemar_exact_values():
    a, b = _pair(100, only_a=0, only_b=5, both=80)
    assert mcnemar_exact_p(a, b) == pytest.approx(2 / 32)  # 5 of 5 one way: 2 * 0.5**5
    a, b = _pair(100, only_a=3, only_b=3, both=80)
    assert mcnemar_exact_p(a, b) == 1.0
    a, b = _pair(2000, only_a=400, only_b=300, both=1000)  # large n: exact integers, no overflow
    assert 0 < mcnemar_exact_p(a, b) < 1e-3


def test_summary_and_format():
    a, b = _pair(872, only_a=10, only_b=15, both=760)
    s = paired_summary(a, b)
    assert s["rows"] == 872 and s["only_a_right"] == 10 and s["only_b_right"] == 15
    assert s["diff_points"] == pytest.approx(-500 / 872)
    assert format_diff(s).startswith("-0.57 [")


def test_unequal_lengths_are_an_error():
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0, 1], [1, 0])

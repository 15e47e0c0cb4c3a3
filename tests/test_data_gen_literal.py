"""The literal re-implementation of the reference preprocessing (``bench/literal_data_gen.py``), pinned.

``data_gen`` is compared with it in ``tests/test_data_gen.py``; these tests pin the literal version's own
behaviour on known values.
"""

from __future__ import annotations

import numpy as np

from bench.literal_data_gen import literal_angle_between, literal_pad, literal_rotation_matrix


def test_literal_angle_between_known_values():
    assert literal_angle_between(np.array([1.0, 0, 0]), [0, 1, 0]) == np.pi / 2
    assert literal_angle_between(np.array([1.0, 0, 0]), [1, 0, 0]) == 0.0
    assert literal_angle_between(np.array([1.0, 0, 0]), [-1, 0, 0]) == np.pi
    assert literal_angle_between(np.zeros(3), [1, 0, 0]) == 0


def test_literal_rotation_matrix_is_counter_clockwise():
    r = literal_rotation_matrix([0, 0, 1], np.pi / 2)
    np.testing.assert_allclose(r @ [1.0, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_array_equal(literal_rotation_matrix([0, 0, 1e-7], 1.0), np.eye(3))
    np.testing.assert_array_equal(literal_rotation_matrix([0, 0, 1], 1e-7), np.eye(3))


def test_literal_pad_loops_the_sequence():
    s = np.zeros((1, 1, 7, 1, 1))
    s[0, 0, 2:5, 0, 0] = [1, 2, 3]  # two leading empty frames, then 3 frames
    literal_pad(s)
    assert s[0, 0, :, 0, 0].tolist() == [1, 2, 3, 1, 2, 3, 1]

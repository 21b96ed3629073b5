"""Matrices typed, printed and linked, and sums of products written out: what the lab's text is made of."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz.handwork import matrices as mx

# ---------------------------------------------------------------------------------------------------------------
# Matrix text


@pytest.mark.parametrize("text", ["1 2\n3 4", "1, 2; 3, 4", "[[1, 2], [3, 4]]", " 1   2 \n\n 3 4 \n"])
def test_parse_matrix_accepts_the_usual_ways_of_typing(text):
    assert mx.parse_matrix(text).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("text,message", [
    ("", "empty"), ("1 2\n3", "same number"), ("1 x\n3 4", "not a number"), ("[[1, 2], [3, 'a']]", "not a number"),
    ("[[1, 2]", "list of rows"), ("1 nan", "finite"), ("1 inf", "finite"), ("1e300", "between"),
    ("\n".join(["1 2 3"] * 9), "largest"), ("[[True]]", "not a number"), ("[[1, 2], 3]", "row"),
])
def test_parse_matrix_explains_bad_input(text, message):
    with pytest.raises(mx.MatrixError, match=message):
        mx.parse_matrix(text, "X")


def test_matrix_text_round_trips():
    m = np.array([[-478.0, 0.5], [1e-3, 3.0]])
    assert mx.parse_matrix(mx.matrix_text(m)).tolist() == m.tolist()
    assert mx.parse_matrix(mx.matrix_rows_text(m)).tolist() == m.tolist()


@pytest.mark.parametrize("text", ["1 2 3\n4 5 6", "-0.5 1e-07\n3 4", "[[1, 2], [3, 4]]", "7"])
def test_a_matrix_goes_into_a_link_and_comes_back_the_same(text):
    link = mx.link_text(text)
    assert "\n" not in link and " " not in link
    assert mx.parse_matrix(mx.box_text(link, "X")).tolist() == mx.parse_matrix(text).tolist()


@pytest.mark.parametrize("link,message", [("1,2;3", "same number"), ("1,x", "not a number"), ("1e400", "finite"),
                                          ("9e99", "between"), ("", "empty"), (";".join(["1"] * 9), "largest")])
def test_a_bad_matrix_in_a_link_is_refused_with_the_reason(link, message):
    with pytest.raises(mx.MatrixError, match=message):
        mx.box_text(link, "X")


def test_sums_of_products_print_small_numbers_and_negative_factors_exactly():
    cell = mx.CellSum((0, 1), (mx.Term(1e-5, 1e-5, (0, 0), (0, 0)), mx.Term(-2.0, 0.0, (0, 1), (0, 1))), 1e-10)
    assert cell.expression() == "1e-05·1e-05 + (-2)·0 = 1e-10"
    assert cell.expression(skip_zeros=True) == "1e-05·1e-05 = 1e-10"
    assert cell.line("O") == "O[0, 1] = 1e-05·1e-05 + (-2)·0 = 1e-10"
    assert mx.cell_lines([cell, cell], "O").splitlines() == ["- " + cell.line("O")] * 2


def test_entries_are_counted_from_zero_row_by_row():
    assert [mx.entry_label(k, (2, 3)) for k in range(6)] == ["(0, 0)", "(0, 1)", "(0, 2)", "(1, 0)", "(1, 1)",
                                                             "(1, 2)"]

"""The search query parser: the grammar, precedence, and refusals that name the bad part (hostile input too)."""

from __future__ import annotations

import pytest

from mloop_registry.search import MAX_DEPTH, And, Condition, Or, SearchError, parse_query


def test_a_metric_comparison():
    assert parse_query("metric.roc_auc > 0.8") == Condition("metric", "roc_auc", ">", 0.8)


def test_and_binds_tighter_than_or():
    tree = parse_query("name = churn AND metric.f1 >= 0.7 or status=production")

    assert tree == Or(
        (
            And((Condition("name", None, "=", "churn"), Condition("metric", "f1", ">=", 0.7))),
            Condition("status", None, "=", "production"),
        )
    )


def test_parentheses_group():
    tree = parse_query("(tag.team = fraud OR tag.gold) AND dataset_version < 3")

    assert tree == And(
        (
            Or((Condition("tag", "team", "=", "fraud"), Condition("tag", "gold", None, None))),
            Condition("dataset_version", None, "<", 3.0),
        )
    )


def test_quoted_values_keep_spaces_and_keywords():
    assert parse_query("tag.owner = 'Ann OR Bob'") == Condition("tag", "owner", "=", "Ann OR Bob")
    assert parse_query('dataset != "a b"') == Condition("dataset", None, "!=", "a b")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty query"),
        ("colour = red", "unknown field 'colour' at position 0"),
        ("metric.f1 > high", "'high' at position 12 is not one"),
        ("metric.f1 > nan", "not a finite number"),
        ("name > churn", "name takes = or !="),
        ("name = churn AND", "query ends where a condition"),
        ("(name = churn", "query ends where ')'"),
        ("name = churn)", "unexpected ')' at position 12"),
        ("name churn", "expected an operator after 'name' at position 0, found 'churn'"),
        ("metric. > 1", "metric.KEY needs a key"),
        ("name = churn; DROP TABLE models", "unexpected character ';' at position 12"),
        ("AND name = x", "expected a field at position 0"),
    ],
)
def test_bad_queries_name_the_bad_part(query, message):
    with pytest.raises(SearchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_query(query)


def test_injection_attempts_stay_values():
    tree = parse_query('name = "x\' OR 1=1 --"')

    assert tree == Condition("name", None, "=", "x' OR 1=1 --")


def test_nesting_is_bounded():
    assert parse_query("(" * MAX_DEPTH + "version = 1" + ")" * MAX_DEPTH) == Condition("version", None, "=", 1.0)
    with pytest.raises(SearchError, match="nested deeper"):
        parse_query("(" * 900 + "version = 1" + ")" * 900)


def test_length_and_condition_count_are_bounded():
    with pytest.raises(SearchError, match="over 2000 characters"):
        parse_query("version = 1 OR " * 200 + "version = 1")
    with pytest.raises(SearchError, match="more than 32 conditions"):
        parse_query(" OR ".join(["version=1"] * 33))

"""The local clean room against labelled example queries for each rule type (AWS Clean Rooms' analysis-rule
documentation), run the way the asset
runs them: through the protected-query driver against `LocalCollaboration`'s boto3-shaped calls.

Fixture L (LIST): `crm` is the query runner's table, `pub` the partner's. Fixture A (AGGREGATION) is the
aws-sdk-pandas data, both tables the runner's. Fixture C (CUSTOM): `custom`, with one analysis template.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from audience_assets.core.cleanroom import protected_query
from audience_assets.core.cleanroom.admission import Parameter
from audience_assets.core.cleanroom.rules import AnalysisRuleInvalid, ConfiguredTable, rule_from_policy
from audience_assets.standins.local_clean_room import AnalysisTemplate, LocalCollaboration

RUNNER, PARTNER = "111111111111", "222222222222"
MEMBERSHIP = "0b7a1c52-3c4e-4d7b-9a4f-6f1e2d3c4b5a"
TEMPLATE = f"arn:aws:cleanrooms:us-east-1:{RUNNER}:membership/{MEMBERSHIP}/analysistemplate/by-b"
OTHER_TEMPLATE = f"arn:aws:cleanrooms:us-east-1:{RUNNER}:membership/{MEMBERSHIP}/analysistemplate/other"
NO_WAIT = protected_query.Polling(first=0, longest=0, deadline=60)


def _table(tmp: Path, name: str, sql: str, policy: dict, owner: str) -> ConfiguredTable:
    path = tmp / f"{name}.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
        columns = tuple(r[0] for r in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall())
    return ConfiguredTable(name, path, columns, rule_from_policy(policy, columns), owner)


def _tables(tmp: Path, custom_policy: dict | None = None) -> list[ConfiguredTable]:
    crm = _table(
        tmp,
        "crm",
        "SELECT * FROM (VALUES ('c1','gold','west','e1'), ('c2','silver','east','e2'), "
        "('c3','gold','east','e3')) t(internal_id, segment, region, hashed_email)",
        {"list": {"joinColumns": ["hashed_email"], "listColumns": ["internal_id", "segment", "region"]}},
        RUNNER,
    )
    pub = _table(
        tmp,
        "pub",
        "SELECT * FROM (VALUES ('e1','golf','25-34'), ('e2','chess','35-44'), ('e3','tennis','25-34'), "
        "('e9','golf','25-34')) t(hashed_email, interest, age_band)",
        {"list": {"joinColumns": ["hashed_email"], "listColumns": ["interest", "age_band"]}},
        PARTNER,
    )
    users = _table(
        tmp,
        "users",
        "SELECT * FROM (VALUES (1,'LA'),(2,'NYC'),(3,'Chicago'),(4,'NYC'),(5,'NYC'),(6,'LA'),"
        "(7,'Seattle'),(8,'Seattle')) t(user_id, city)",
        {
            "aggregation": {
                "aggregateColumns": [{"columnNames": ["user_id"], "function": "COUNT"}],
                "joinColumns": ["user_id"],
                "dimensionColumns": ["city"],
                "scalarFunctions": ["LOWER"],
                "outputConstraints": [{"columnName": "user_id", "minimum": 2, "type": "COUNT_DISTINCT"}],
                "joinRequired": "QUERY_RUNNER",
            }
        },
        RUNNER,
    )
    purchases = _table(
        tmp,
        "purchases",
        "SELECT * FROM (VALUES (100,1,1.0),(101,2,10.0),(102,3,3.0),(103,1,2.0),"
        "(104,2,5.0),(105,3,4.0),(106,4,4.9),(107,5,6.0),(108,6,2.2)) "
        "t(purchase_id, user_id, sale_value)",
        {
            "aggregation": {
                "aggregateColumns": [
                    {"columnNames": ["purchase_id"], "function": "COUNT"},
                    {"columnNames": ["sale_value"], "function": "AVG"},
                    {"columnNames": ["sale_value"], "function": "SUM"},
                ],
                "joinColumns": ["user_id"],
                "dimensionColumns": [],
                "scalarFunctions": [],
                "outputConstraints": [{"columnName": "user_id", "minimum": 2, "type": "COUNT_DISTINCT"}],
                "joinRequired": "QUERY_RUNNER",
            }
        },
        RUNNER,
    )
    custom = _table(
        tmp,
        "custom",
        "SELECT * FROM (VALUES (1,'A'),(2,'A'),(3,'B'),(4,'C'),(5,'C'),(6,'C'),(7,'D'),(8,'E')) t(a, b)",
        custom_policy or {"custom": {"allowedAnalyses": [TEMPLATE]}},
        PARTNER,
    )
    return [crm, pub, users, purchases, custom]


@pytest.fixture
def room(tmp_path: Path) -> LocalCollaboration:
    return _room(tmp_path)


def _room(
    tmp_path: Path, custom_policy: dict | None = None, templates: tuple[AnalysisTemplate, ...] = ()
) -> LocalCollaboration:
    tmp_path.mkdir(parents=True, exist_ok=True)
    template = AnalysisTemplate(
        TEMPLATE, "by-b", "SELECT a FROM custom WHERE custom.b = :param1", (Parameter("param1", "VARCHAR"),)
    )
    return LocalCollaboration(
        membership_id=MEMBERSHIP,
        account_id=RUNNER,
        tables=_tables(tmp_path, custom_policy),
        templates=(template, *templates),
        work_dir=tmp_path / "work",
    )


def _run(room: LocalCollaboration, sql: str | None = None, **template) -> list[tuple]:
    parameters = {"queryString": sql} if sql is not None else template
    done = protected_query.run(
        room,
        membership_id=MEMBERSHIP,
        sql_parameters=parameters,
        bucket="results-bucket",
        key_prefix="results",
        what="test",
        polling=NO_WAIT,
    )
    parts = Path(done.location.removeprefix("file://"))
    return duckdb.sql(f"SELECT * FROM read_parquet('{parts}/*.parquet')").fetchall()


def _rejected(room: LocalCollaboration, sql: str | None = None, **template) -> str:
    with pytest.raises(protected_query.ProtectedQueryFailed) as failure:
        _run(room, sql, **template)
    assert failure.value.status == "FAILED"
    return str(failure.value)


JOIN = "FROM crm c INNER JOIN pub p ON c.hashed_email = p.hashed_email"


# ---------------------------------------------------------------------------- LIST (examples 1-9)


def test_1_list_query_on_list_columns_is_allowed(room):
    rows = _run(room, f"SELECT DISTINCT c.internal_id, p.interest {JOIN} WHERE p.age_band = '25-34' LIMIT 1000")
    assert sorted(rows) == [("c1", "golf"), ("c3", "tennis")]
    assert room.history[next(iter(room.queries))] == ["SUBMITTED", "STARTED", "SUCCESS"]


def test_2_list_query_needs_distinct(room):
    assert "must use SELECT DISTINCT" in _rejected(room, f"SELECT c.internal_id, p.interest {JOIN}")


def test_3_join_column_cannot_be_output(room):
    assert "Column(s) [hashed_email] is not allowed in select" in _rejected(
        room, f"SELECT DISTINCT p.hashed_email {JOIN}"
    )


def test_4_partner_table_must_be_joined_to_the_runners(room):
    message = _rejected(room, "SELECT DISTINCT p.interest FROM pub p")
    assert "Inner join to query runner table required for table pub" in message


def test_5_only_inner_join(room):
    assert "Only INNER JOIN" in _rejected(
        room, "SELECT DISTINCT c.internal_id FROM crm c LEFT JOIN pub p ON c.hashed_email = p.hashed_email"
    )
    assert "Only INNER JOIN" in _rejected(room, "SELECT DISTINCT c.internal_id FROM crm c, pub p")


def test_6_or_and_non_join_columns_are_refused(room):
    message = _rejected(room, f"SELECT DISTINCT c.internal_id {JOIN} OR c.region = p.age_band")
    assert "are not join columns" in message or "Join operator OR" in message
    # OR alone, on join columns: refused because neither table lists OR (unset means AND only)
    assert "Join operator OR is not allowed for table" in _rejected(
        room,
        "SELECT DISTINCT c.internal_id FROM crm c INNER JOIN pub p ON (c.hashed_email = p.hashed_email "
        "OR c.hashed_email = p.hashed_email)",
    )


def test_7_no_functions_in_join_conditions(room):
    message = _rejected(
        room, "SELECT DISTINCT c.internal_id FROM crm c INNER JOIN pub p ON LOWER(c.hashed_email) = p.hashed_email"
    )
    assert "must compare two columns" in message


def test_8_join_column_outside_on(room):
    assert "Column(s) [hashed_email] is not allowed in where" in _rejected(
        room, f"SELECT DISTINCT c.internal_id {JOIN} WHERE p.hashed_email LIKE 'a%'"
    )


@pytest.mark.parametrize("tail", ["ORDER BY p.interest", "GROUP BY p.interest", "LIMIT 5 OFFSET 5"])
def test_9_clauses_outside_the_list_grammar(room, tail):
    assert "not allowed in list queries" in _rejected(room, f"SELECT DISTINCT p.interest {JOIN} {tail}")


def test_9_ctes_are_outside_the_list_grammar(room):
    assert "no CTEs" in _rejected(
        room, f"WITH x AS (SELECT DISTINCT p.interest {JOIN}) SELECT DISTINCT interest FROM x"
    )


def test_list_top_and_an_allowed_or_join(tmp_path):
    room = _room(tmp_path)
    for table in ("crm", "pub"):
        t = room.tables[table]
        room.tables[table] = ConfiguredTable(
            t.name,
            t.path,
            t.columns,
            rule_from_policy(
                {
                    "list": {
                        "joinColumns": ["hashed_email"],
                        "listColumns": [c for c in t.columns if c != "hashed_email"],
                        "allowedJoinOperators": ["OR", "AND"],
                    }
                },
                t.columns,
            ),
            t.owner,
        )
    rows = _run(
        room,
        "SELECT TOP 10 DISTINCT c.internal_id FROM crm c INNER JOIN pub p "
        "ON c.hashed_email = p.hashed_email OR c.hashed_email = p.hashed_email",
    )
    assert sorted(rows) == [("c1",), ("c2",), ("c3",)]


# ---------------------------------------------------------------------------- AGGREGATION (examples 10-19)

AGG_JOIN = "FROM users u INNER JOIN purchases p ON u.user_id = p.user_id"


def test_10_small_groups_are_dropped_silently(room):
    rows = _run(room, f"SELECT COUNT(p.purchase_id), SUM(p.sale_value), city {AGG_JOIN} GROUP BY city")
    assert sorted((r[2], r[0], round(float(r[1]), 3)) for r in rows) == [("LA", 3, 5.2), ("NYC", 4, 25.9)]
    # Chicago (two purchases by one user) is gone, and nothing in the output says so
    assert len(rows[0]) == 3


def test_11_average_by_city(room):
    rows = dict(_run(room, f"SELECT city, AVG(p.sale_value) {AGG_JOIN} GROUP BY city"))
    assert rows.keys() == {"LA", "NYC"}
    assert rows["LA"] == pytest.approx(5.2 / 3) and rows["NYC"] == pytest.approx(6.475)


def test_12_dimension_without_aggregate_or_group_by(room):
    assert "Column(s) [users.city] must appear in group by clause" in _rejected(room, "SELECT city FROM users")


def test_13_function_not_listed_for_the_column(room):
    assert "SUM is not allowed on column purchases.purchase_id" in _rejected(
        room, f"SELECT SUM(p.purchase_id), city {AGG_JOIN} GROUP BY city"
    )


def test_14_join_column_as_a_dimension(room):
    assert "Column(s) [user_id] is not allowed in select" in _rejected(
        room, f"SELECT COUNT(p.purchase_id), u.user_id {AGG_JOIN} GROUP BY u.user_id"
    )


def test_15_aggregate_column_cannot_be_filtered(room):
    assert "Column(s) [sale_value] is not allowed in where" in _rejected(
        room, f"SELECT COUNT(p.purchase_id), city {AGG_JOIN} WHERE p.sale_value > 5 GROUP BY city"
    )


def test_16_scalar_functions_must_be_listed(room):
    assert "Function UPPER is not allowed for table users" in _rejected(
        room, f"SELECT UPPER(city), COUNT(p.purchase_id) {AGG_JOIN} GROUP BY UPPER(city)"
    )
    rows = _run(room, f"SELECT LOWER(city), COUNT(p.purchase_id) {AGG_JOIN} GROUP BY LOWER(city)")
    assert sorted(rows) == [("la", 3), ("nyc", 4)]


def test_17_no_limit_in_aggregation(room):
    assert "LIMIT" in _rejected(room, f"SELECT COUNT(p.purchase_id), city {AGG_JOIN} GROUP BY city LIMIT 10")


def test_18_aggregate_arguments_are_bare_columns(room):
    assert "Only columns are allowed as arguments" in _rejected(
        room, f"SELECT AVG(p.sale_value + 1), city {AGG_JOIN} GROUP BY city"
    )


def test_19_list_and_aggregation_tables_do_not_mix(room):
    assert "same analysis rule type" in _rejected(
        room, "SELECT DISTINCT c.internal_id FROM crm c JOIN purchases p ON c.internal_id = p.user_id"
    )


def test_aggregation_count_star_and_unjoined_tables(room):
    assert "COUNT(*) is not allowed" in _rejected(room, f"SELECT COUNT(*), city {AGG_JOIN} GROUP BY city")
    rows = _run(
        room,
        f"SELECT city, COUNT(p.purchase_id) AS n {AGG_JOIN} GROUP BY city HAVING COUNT(p.purchase_id) > 3 "
        "ORDER BY n DESC",
    )
    assert rows == [("NYC", 4)]
    # ORDER BY applies to the rows that survive the constraints, by alias, position or expression
    for order in ("n DESC", "2 DESC", "COUNT(p.purchase_id) DESC", "SUM(p.sale_value) DESC"):
        assert _run(room, f"SELECT city, COUNT(p.purchase_id) AS n {AGG_JOIN} GROUP BY city ORDER BY {order}") == [
            ("NYC", 4),
            ("LA", 3),
        ], order
    assert _run(room, f"SELECT city, COUNT(p.purchase_id) AS n {AGG_JOIN} GROUP BY city ORDER BY city") == [
        ("LA", 3),
        ("NYC", 4),
    ]
    # no GROUP BY: one row when the whole join meets the constraint
    assert _run(room, f"SELECT COUNT(p.purchase_id) {AGG_JOIN}") == [(9,)]


# ---------------------------------------------------------------------------- CUSTOM (example 20 and more)


def test_20_allowed_template_with_a_parameter(room):
    assert sorted(_run(room, analysisTemplateArn=TEMPLATE, parameters={"param1": "C"})) == [(4,), (5,), (6,)]


def test_20_same_sql_as_a_query_string_is_refused(room):
    assert "cannot run its own query" in _rejected(room, "SELECT a FROM custom WHERE custom.b = 'C'")


def test_parameters_are_bound_as_literals_never_spliced(room):
    assert _run(room, analysisTemplateArn=TEMPLATE, parameters={"param1": "C' OR '1'='1"}) == []
    assert "has no value and no default" in _rejected(room, analysisTemplateArn=TEMPLATE)
    assert "not declared" in _rejected(room, analysisTemplateArn=TEMPLATE, parameters={"param1": "C", "extra": "x"})


def test_typed_parameters(tmp_path):
    typed = AnalysisTemplate(
        OTHER_TEMPLATE, "other", "SELECT b FROM custom WHERE a > :n", (Parameter("n", "INTEGER", "6"),)
    )
    room = _room(tmp_path, {"custom": {"allowedAnalyses": [TEMPLATE, OTHER_TEMPLATE]}}, (typed,))
    assert sorted(_run(room, analysisTemplateArn=OTHER_TEMPLATE)) == [("D",), ("E",)]  # the default
    assert _run(room, analysisTemplateArn=OTHER_TEMPLATE, parameters={"n": "7"}) == [("E",)]
    assert "expects INTEGER" in _rejected(room, analysisTemplateArn=OTHER_TEMPLATE, parameters={"n": "7 OR 1=1"})


def test_template_not_in_allowed_analyses(tmp_path):
    other = AnalysisTemplate(OTHER_TEMPLATE, "other", "SELECT a FROM custom")
    room = _room(tmp_path, templates=(other,))
    assert f"Analysis template {OTHER_TEMPLATE} is not allowed by the analysis rule of table custom" in _rejected(
        room, analysisTemplateArn=OTHER_TEMPLATE
    )


def test_any_query_for_an_allowed_provider_only(tmp_path):
    open_room = _room(
        tmp_path / "a", {"custom": {"allowedAnalyses": ["ANY_QUERY"], "allowedAnalysisProviders": [RUNNER]}}
    )
    assert sorted(_run(open_room, "SELECT a FROM custom WHERE b = 'A'")) == [(1,), (2,)]
    closed = _room(
        tmp_path / "b", {"custom": {"allowedAnalyses": ["ANY_QUERY"], "allowedAnalysisProviders": [PARTNER]}}
    )
    assert "cannot run its own query" in _rejected(closed, "SELECT a FROM custom")


def test_disallowed_output_columns_are_traced_through_subqueries(tmp_path):
    room = _room(
        tmp_path,
        {
            "custom": {
                "allowedAnalyses": ["ANY_QUERY"],
                "allowedAnalysisProviders": [RUNNER],
                "disallowedOutputColumns": ["a"],
            }
        },
    )
    assert "Column(s) [custom.a] is not allowed in output" in _rejected(room, "SELECT a FROM custom")
    assert "Column(s) [custom.a] is not allowed in output" in _rejected(
        room, "WITH x AS (SELECT a AS renamed FROM custom) SELECT q.renamed + 1 AS y FROM (SELECT renamed FROM x) q"
    )
    assert "not allowed in output" in _rejected(room, "SELECT * FROM custom")
    # folded into an aggregate, the values do not leave the room
    assert _run(room, "SELECT b, COUNT(DISTINCT a) AS n FROM custom GROUP BY b ORDER BY b LIMIT 1") == [("A", 2)]


def test_aggregation_thresholds_drop_small_rows(tmp_path):
    room = _room(
        tmp_path,
        {
            "custom": {
                "allowedAnalyses": ["ANY_QUERY"],
                "allowedAnalysisProviders": [RUNNER],
                "aggregationThresholds": [
                    {"identityColumns": ["b"], "minimumIdentityCount": 2, "type": "COUNT_DISTINCT"}
                ],
            }
        },
    )
    # groups by a / 4: {1,2,3} has b A,A,B (2 distinct); {4,5,6,7} has C,C,C,D (2); {8} has E (1) -> dropped
    rows = _run(
        room,
        "SELECT a_group, COUNT(*) AS n FROM (SELECT FLOOR(a / 4) AS a_group, b FROM custom) s "
        "GROUP BY a_group ORDER BY a_group",
    )
    assert [n for _, n in rows] == [3, 4]
    assert _run(room, "SELECT COUNT(DISTINCT b) FROM custom WHERE b = 'C'") == []
    assert "aggregate in the outermost SELECT" in _rejected(room, "SELECT a FROM custom")
    assert "COLUMNS_ONLY" in _rejected(room, "SELECT SUM(a * 2) FROM custom")


def test_other_statements_and_unknown_tables(room):
    assert "Only SELECT" in _rejected(room, "DROP TABLE custom")
    assert "not associated with the collaboration" in _rejected(room, "SELECT a FROM secrets")
    assert "exactly one SQL statement" in _rejected(room, "SELECT 1; SELECT 2")


# ---------------------------------------------------------------------------- rule definitions and the API contract


@pytest.mark.parametrize(
    "policy, message",
    [
        ({"list": {"joinColumns": ["a"], "listColumns": ["a"]}}, "both join and list"),
        ({"list": {"joinColumns": [], "listColumns": ["a"]}}, "at least one"),
        ({"list": {"joinColumns": ["zz"], "listColumns": ["a"]}}, "not among the table's allowed columns"),
        ({"list": {"joinColumns": ["a"], "listColumns": ["b"], "allowedJoinOperators": ["XOR"]}}, "AND and OR"),
        (
            {
                "aggregation": {
                    "aggregateColumns": [{"columnNames": ["a"], "function": "MAX"}],
                    "joinColumns": [],
                    "dimensionColumns": [],
                    "scalarFunctions": [],
                    "outputConstraints": [],
                }
            },
            "not one of",
        ),
        (
            {
                "aggregation": {
                    "aggregateColumns": [{"columnNames": ["a"], "function": "SUM"}],
                    "joinColumns": [],
                    "dimensionColumns": ["a"],
                    "scalarFunctions": [],
                    "outputConstraints": [{"columnName": "b", "minimum": 2, "type": "COUNT_DISTINCT"}],
                }
            },
            "cannot also",
        ),
        (
            {
                "aggregation": {
                    "aggregateColumns": [{"columnNames": ["a"], "function": "SUM"}],
                    "joinColumns": [],
                    "dimensionColumns": [],
                    "scalarFunctions": [],
                    "outputConstraints": [{"columnName": "b", "minimum": 1, "type": "COUNT_DISTINCT"}],
                }
            },
            "2 to 100000",
        ),
        ({"custom": {"allowedAnalyses": ["ANY_QUERY"]}}, "allowedAnalysisProviders is required"),
        ({"nonsense": {}}, "unknown analysis rule type"),
    ],
)
def test_rule_definitions_are_checked(policy, message):
    with pytest.raises(AnalysisRuleInvalid, match=message):
        rule_from_policy(policy, ["a", "b"])


def test_requests_are_checked_against_the_service_model(room):
    with pytest.raises(ParamValidationError, match="resultFormat"):
        room.start_protected_query(
            type="SQL",
            membershipIdentifier=MEMBERSHIP,
            sqlParameters={"queryString": "SELECT 1"},
            resultConfiguration={"outputConfiguration": {"s3": {"resultFormat": "JSON", "bucket": "results-bucket"}}},
        )
    with pytest.raises(ParamValidationError):
        room.get_protected_query(membershipIdentifier="short", protectedQueryIdentifier="x")
    done = room.start_protected_query(
        type="SQL",
        membershipIdentifier=MEMBERSHIP,
        sqlParameters={"analysisTemplateArn": TEMPLATE, "parameters": {"param1": "A"}},
        resultConfiguration={
            "outputConfiguration": {"s3": {"resultFormat": "CSV", "bucket": "results-bucket", "keyPrefix": "r"}}
        },
    )
    query_id = done["protectedQuery"]["id"]
    finished = room.get_protected_query(membershipIdentifier=MEMBERSHIP, protectedQueryIdentifier=query_id)[
        "protectedQuery"
    ]
    assert finished["status"] == "SUCCESS" and finished["result"]["output"]["s3"]["location"].endswith(f"r/{query_id}/")
    with pytest.raises(ClientError, match="ConflictException"):
        room.update_protected_query(
            membershipIdentifier=MEMBERSHIP, protectedQueryIdentifier=query_id, targetStatus="CANCELLED"
        )


def test_queries_cannot_reach_the_machines_files(tmp_path):
    room = _room(tmp_path, {"custom": {"allowedAnalyses": ["ANY_QUERY"], "allowedAnalysisProviders": [RUNNER]}})
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nsupersecret\n")
    for sql in (
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT a FROM custom WHERE b IN (SELECT token FROM '{secret}')",
        f"SELECT a, (SELECT content FROM read_text('{secret}')) AS leak FROM custom",
    ):
        message = _rejected(room, sql)
        assert "supersecret" not in message
        assert "Table functions are not allowed" in message or "not associated with the collaboration" in message
    # and should SQL ever get past admission, DuckDB itself refuses to open any other file
    with pytest.raises(duckdb.PermissionException):
        room._execute("escape", f"SELECT * FROM read_text('{secret}')", "PARQUET")


# ---------------------------------------------------------------------------- ways around the rules, refused

OPEN = {"allowedAnalyses": ["ANY_QUERY"], "allowedAnalysisProviders": [RUNNER]}
THRESHOLD_B = {
    "aggregationThresholds": [{"identityColumns": ["b"], "minimumIdentityCount": 2, "type": "COUNT_DISTINCT"}]
}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT MAX(a) AS m FROM custom",  # MIN/MAX/SUM/LISTAGG return values a group holds
        "SELECT b, MIN(a) AS m FROM custom GROUP BY b",
        "SELECT SUM(a) AS s FROM custom WHERE b = 'E'",
        "SELECT LISTAGG(a, ',') AS l FROM custom",
        "SELECT (SELECT MAX(a) FROM custom) AS x",  # through a scalar subquery
        "SELECT b, (SELECT a FROM custom LIMIT 1) AS x FROM custom",
        "SELECT t FROM custom t",  # the whole row, as a struct (no column to Spark: refused unresolved)
        "SELECT COLUMNS(*) FROM custom",
        "SELECT COUNT(DISTINCT a) + MAX(a) AS n FROM custom",
    ],
)
def test_disallowed_values_cannot_leave_through_other_functions(tmp_path, sql):
    room = _room(tmp_path, {"custom": {**OPEN, "disallowedOutputColumns": ["a"]}})
    message = _rejected(room, sql)
    assert any(w in message for w in ("not allowed in output", "name the columns to output", "could not be resolved"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT b FROM custom AS c(b, a)",  # a's values under the name b
        "SELECT b FROM (SELECT a, b FROM custom) AS s(b, a)",
        "WITH w(b, a) AS (SELECT a, b FROM custom) SELECT b FROM w",
    ],
)
def test_column_alias_lists_cannot_rename_a_disallowed_column(tmp_path, sql):
    room = _room(tmp_path, {"custom": {**OPEN, "disallowedOutputColumns": ["a"]}})
    assert "Column aliases" in _rejected(room, sql)


def test_a_query_nested_too_deeply_is_rejected_not_failed(tmp_path):
    room = _room(tmp_path, {"custom": OPEN})
    depth = 300
    assert "nests too deeply" in _rejected(
        room, "SELECT b FROM " + "(SELECT b FROM " * depth + "custom" + ") AS t" * depth
    )


def test_a_cte_cannot_hide_a_table_from_its_rule(tmp_path):
    """`pub` allows only templates; a CTE named pub in one scope must not make the real pub in another
    scope look like the CTE."""
    room = _room(tmp_path, {"custom": OPEN})
    pub = room.tables["pub"]
    room.tables["pub"] = ConfiguredTable(
        pub.name,
        pub.path,
        pub.columns,
        rule_from_policy({"custom": {"allowedAnalyses": [TEMPLATE]}}, pub.columns),
        PARTNER,
    )
    message = _rejected(
        room,
        "SELECT (SELECT MAX(interest) FROM pub) AS leak, q.x "
        "FROM (WITH pub AS (SELECT a AS x FROM custom) SELECT x FROM pub) q",
    )
    assert "CTE name pub is a configured table" in message
    assert "defined twice" in _rejected(
        room,
        "SELECT * FROM (WITH x AS (SELECT a FROM custom) SELECT a FROM x) q1, "
        "(WITH x AS (SELECT b FROM custom) SELECT b FROM x) q2",
    )
    assert "by name alone" in _rejected(room, "SELECT a FROM main.custom")
    assert "Recursive CTEs" in _rejected(room, "WITH RECURSIVE r AS (SELECT a FROM custom) SELECT a FROM r")
    # the same query with a CTE of its own name runs
    assert sorted(
        _run(room, "SELECT q.x FROM (WITH mine AS (SELECT a AS x FROM custom) SELECT x FROM mine) q WHERE q.x < 3")
    ) == [(1,), (2,)]


def test_thresholds_count_every_copy_of_a_self_joined_table(tmp_path):
    room = _room(tmp_path, {"custom": {**OPEN, **THRESHOLD_B}})
    # x spans every b, but y is only E's row: without a count on y, SUM(y.a) would tell E's value
    assert _run(room, "SELECT COUNT(*) AS n, SUM(y.a) AS s FROM custom x JOIN custom y ON y.b = 'E'") == []
    # both copies broad enough: the row stays
    assert _run(room, "SELECT COUNT(*) AS n FROM custom x JOIN custom y ON y.b IN ('A', 'B')") == [(24,)]
    # a copy inside one subquery cannot be counted on its own: refused
    assert "reads it 2 times" in _rejected(
        room,
        "SELECT COUNT(*) AS n, SUM(s.v) AS total FROM (SELECT x.b, y.a AS v FROM custom x JOIN custom y "
        "ON y.b = 'E') s",
    )


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT b, COUNT(*) AS n, SUM(COUNT(*)) OVER () AS everyone FROM custom GROUP BY b", "Window functions"),
        (
            "SELECT COUNT(*) AS n, MAX(s.v) AS m FROM (SELECT b, FIRST_VALUE(a) OVER (ORDER BY b DESC) AS "
            "v FROM custom) s",
            "Window functions",
        ),
        (
            "SELECT b, COUNT(*) AS n FROM custom WHERE a > (SELECT MAX(a) FROM custom WHERE b = 'E') - 1 GROUP BY b",
            "not in a subquery expression",
        ),
        (
            "SELECT COUNT(*) AS n FROM custom x JOIN (SELECT a AS v FROM custom WHERE b = 'E') e ON x.a <> e.v",
            "must pass custom.b through unchanged",
        ),
    ],
)
def test_thresholds_cannot_be_bypassed(tmp_path, sql, message):
    room = _room(tmp_path, {"custom": {**OPEN, **THRESHOLD_B}})
    assert message in _rejected(room, sql)


def test_engine_errors_never_quote_table_values(tmp_path):
    room = _room(tmp_path, {"custom": OPEN})
    message = _rejected(room, "SELECT CAST(b AS INTEGER) AS n FROM custom")
    assert "ConversionException" in message and "'A'" not in message and "convert" not in message


def test_distinct_on_and_non_finite_parameters_are_refused(tmp_path):
    room = _room(tmp_path)
    assert "DISTINCT ON is not allowed" in _rejected(
        room, f"SELECT DISTINCT ON (c.internal_id) c.internal_id, p.interest {JOIN}"
    )
    typed = AnalysisTemplate(OTHER_TEMPLATE, "other", "SELECT b FROM custom WHERE a > :x", (Parameter("x", "FLOAT"),))
    room = _room(tmp_path / "f", {"custom": {"allowedAnalyses": [TEMPLATE, OTHER_TEMPLATE]}}, (typed,))
    assert sorted(_run(room, analysisTemplateArn=OTHER_TEMPLATE, parameters={"x": "7.5"})) == [("E",)]
    for value in ("nan", "inf", "-Infinity"):
        assert "expects FLOAT" in _rejected(room, analysisTemplateArn=OTHER_TEMPLATE, parameters={"x": value})

import json

import numpy as np
import pytest

from zoobot.core.schema import GZ2, GZ_DECALS, Answer, Question, Schema, SchemaError, load_schema


def test_decals_tree_matches_the_published_columns():
    assert GZ_DECALS.label_cols[:3] == (
        "smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk", "smooth-or-featured_artifact")
    assert GZ_DECALS.id_column == "iauname"
    assert GZ_DECALS.question("has-spiral-arms").follows == "disk-edge-on_no"
    assert GZ_DECALS.question("spiral-arm-count").follows == "has-spiral-arms_yes"
    assert GZ_DECALS.question("merging").follows is None
    assert GZ_DECALS.n_answers == 34


def test_gz2_tree_uses_hart16_count_columns():
    assert GZ2.label_cols[0] == "t01_smooth_or_features_a01_smooth_count"
    assert GZ2.question("t02_edgeon").follows == "t01_smooth_or_features_a02_features_or_disk_count"
    assert GZ2.question("t11_arms_number").columns[-1] == "t11_arms_number_a37_cant_tell_count"
    assert GZ2.id_column == "dr7objid"


@pytest.mark.parametrize("schema", [GZ_DECALS, GZ2])
def test_index_groups_are_contiguous_and_cover_every_column(schema):
    covered = []
    for (start, stop), question in zip(schema.question_index_groups, schema.questions):
        assert schema.label_cols[start:stop] == question.columns
        covered.extend(range(start, stop))
    assert covered == list(range(schema.n_answers))


def test_reach_probability_is_the_product_down_the_tree():
    fractions = np.zeros((1, GZ_DECALS.n_answers))
    col = {c: i for i, c in enumerate(GZ_DECALS.label_cols)}
    fractions[0, col["smooth-or-featured_featured-or-disk"]] = 0.8
    fractions[0, col["smooth-or-featured_smooth"]] = 0.2
    fractions[0, col["disk-edge-on_no"]] = 0.5
    fractions[0, col["has-spiral-arms_yes"]] = 0.25
    reach = dict(zip(GZ_DECALS.question_names, GZ_DECALS.reach_probability(fractions)[0]))
    assert reach["smooth-or-featured"] == 1.0
    assert reach["merging"] == 1.0
    assert reach["disk-edge-on"] == pytest.approx(0.8)
    assert reach["bar"] == pytest.approx(0.4)
    assert reach["spiral-winding"] == pytest.approx(0.1)
    assert reach["how-rounded"] == pytest.approx(0.2)


def test_vote_fractions_are_nan_where_nobody_answered():
    counts = np.zeros((2, GZ_DECALS.n_answers))
    counts[0, :3] = [10, 30, 0]
    fractions = GZ_DECALS.vote_fractions(counts)
    assert fractions[0, :3] == pytest.approx([0.25, 0.75, 0.0])
    assert np.isnan(fractions[1, 0]) and np.isnan(fractions[0, 3])


def test_user_schema_from_yaml_with_binary_and_ring_questions(tmp_path):
    path = tmp_path / "rings.yaml"
    path.write_text(
        "name: rings\n"
        "id_column: objid\n"
        "questions:\n"
        "  - name: ring\n"
        "    answers: [yes, no]\n"  # unquoted yes/no: PyYAML booleans, must still mean the words
        "  - name: ring-type\n"
        "    answers: {inner: n_inner, outer: n_outer}\n"
        "    follows: ring_yes\n"
        "  - name: lens\n"
        "    binary_column: is_lens\n"
    )
    schema = load_schema(path)
    assert schema.name == "rings" and schema.id_column == "objid"
    assert schema.label_cols == ("ring_yes", "ring_no", "n_inner", "n_outer", "is_lens_yes", "is_lens_no")
    assert schema.question("lens").binary_column == "is_lens"
    assert schema.question_index_groups == ((0, 2), (2, 4), (4, 6))


def test_user_schema_from_json_round_trips(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(GZ_DECALS.to_dict()))
    assert load_schema(path) == GZ_DECALS
    assert Schema.from_dict(GZ2.to_dict()) == GZ2


@pytest.mark.parametrize("spec, message", [
    ({"name": "x", "questions": [{"name": "q", "answers": ["a"]}]}, "at least two"),
    ({"name": "x", "questions": [{"name": "q", "answers": ["a", "b"], "follows": "nope"}]}, "follows answer 'nope'"),
    ({"name": "x", "questions": [{"name": "q", "answers": ["a", "b"]}, {"name": "q", "answers": ["c", "d"]}]},
     "twice"),
    ({"name": "x", "questions": [{"name": "q", "answers": ["a", "b"], "follows": "r_a"},
                                 {"name": "r", "answers": ["a", "b"], "follows": "q_a"}]}, "cycle"),
    ({"name": "x", "questions": [{"name": "q"}]}, "needs 'answers'"),
    ({"name": "x"}, "expected a mapping with keys"),
    ({"name": "x", "questions": []}, "no questions"),
])
def test_bad_schema_definitions_say_what_is_wrong(spec, message):
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict(spec)


def test_duplicate_answer_columns_are_refused():
    with pytest.raises(SchemaError, match="more than once"):
        Schema("x", (Question("q", (Answer("a", "c1"), Answer("b", "c1"))),))


def test_unknown_schema_name_lists_the_builtins(tmp_path):
    with pytest.raises(SchemaError, match=r"\['decals', 'gz2'\]"):
        load_schema("decal")
    with pytest.raises(SchemaError, match="does not exist"):
        load_schema(tmp_path / "missing.yaml")


# -- schema files with mistakes: the error names the file and the line ------------------------------

RING_YAML = (
    "name: rings\n"
    "questions:\n"
    "  - name: ring\n"
    "    answers:\n"
    "      inner: n_inner\n"
    "      outer: n_outer\n"
    "      inner: n_partial\n"  # a copy-paste slip: YAML would drop line 5's answer
)


def test_yaml_syntax_error_names_the_file_line_and_fix(tmp_path):
    path = tmp_path / "unclosed.yaml"
    path.write_text("name: x\nquestions:\n  - name: ring\n    answers: [yes, no\n  - name: bar\n")
    with pytest.raises(SchemaError) as error:
        load_schema(path)
    message = str(error.value)
    assert str(path) in message and "<unicode string>" not in message
    # noticed at line 5, but the unclosed '[' of line 4 is the mistake: both are named
    assert "line 5, column 9: expected ',' or ']'" in message and "starts at line 4, column 14" in message
    assert "close every '['" in message


def test_yaml_answers_key_repeated_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "rings.yaml"
    path.write_text(RING_YAML)
    with pytest.raises(SchemaError, match=r"key 'inner' twice in one mapping: at line 5, column 7 and again at "
                                          r"line 7, column 7") as error:
        load_schema(path)
    assert str(path) in str(error.value)


def test_yaml_question_key_repeated_is_refused(tmp_path):
    path = tmp_path / "two_lists.yaml"
    path.write_text("name: x\nquestions:\n  - name: ring\n    answers: [yes, no]\n"
                    "questions:\n  - name: bar\n    answers: [yes, no]\n")
    with pytest.raises(SchemaError, match=r"two_lists.yaml' has the key 'questions' twice .* line 2, .* line 5"):
        load_schema(path)
    path.write_text("name: x\nquestions:\n  - name: ring\n    name: bar\n    answers: [yes, no]\n")
    with pytest.raises(SchemaError, match=r"key 'name' twice .* line 3, .* line 4"):
        load_schema(path)


def test_yes_and_Yes_are_one_key_and_the_message_says_so(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text("name: x\nquestions:\n  - name: q\n    answers: {yes: c1, no: c2, Yes: c3}\n")
    with pytest.raises(SchemaError, match=r"key 'yes' twice .* \(as 'Yes', which YAML reads as the same key\)"):
        load_schema(path)


def test_unique_key_loader_keeps_yes_no_words_and_merge_overrides(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("base: &b {answers: [a, b]}\nname: x\nquestions:\n"
                    "  - <<: *b\n    name: ring\n    answers: [yes, no]\n")  # an explicit key beside `<<` wins
    assert load_schema(path).label_cols == ("ring_yes", "ring_no")


def test_json_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text('{"name": "x",\n "questions": [\n  {"name": "q" "answers": ["a", "b"]}]}')
    with pytest.raises(SchemaError, match=r"'.*tree.json' is not valid JSON: line 3, column 16: Expecting ','"):
        load_schema(path)


def test_json_key_repeated_is_refused(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text('{"name": "x",\n "questions": [{"name": "q",\n  "answers": {"a": "c1", "b": "c2",\n'
                    '   "a": "c3"}}]}')
    with pytest.raises(SchemaError, match=r"key 'a' twice in one object .* line 3, column 15 and line 4, column 4"
                       ) as error:
        load_schema(path)
    assert str(path) in str(error.value)


def test_cli_shows_a_bad_schema_file_without_a_traceback(tmp_path, decals_catalog, sqlite_tracking):
    from click.testing import CliRunner

    from zoobot import cli

    unclosed, repeated = tmp_path / "unclosed.yaml", tmp_path / "rings.yaml"
    unclosed.write_text("name: x\nquestions:\n  - name: ring\n    answers: [yes, no\n  - name: bar\n")
    repeated.write_text(RING_YAML)
    for schema, line in [(unclosed, "line 5"), (repeated, "line 7")]:
        result = CliRunner().invoke(cli.main, ["convert", "--catalog", str(decals_catalog), "--schema", str(schema),
                                               "--output-dir", str(tmp_path / "out")])
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # click's handled error, not an uncaught SchemaError
        assert "Error: Schema file" in result.output and str(schema) in result.output and line in result.output
        assert "Traceback" not in result.output and "<unicode string>" not in result.output

"""Properties of the search-space DSL: encodings, canonical form, variation operators, errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas import Choice, Config, InvalidConfigError, SearchSpace


def stage_space(prefix: str, max_depth: int = 4) -> SearchSpace:
    """A stage with elastic depth: blocks beyond the active depth are inactive."""
    depths = tuple(range(2, max_depth + 1))
    dims = [Choice("depth", depths)]
    for b in range(max_depth):
        when = {} if b < depths[0] else {"depth": tuple(d for d in depths if d > b)}
        dims.append(Choice(f"block{b}.kernel", (3, 5, 7), when=when))
        dims.append(Choice(f"block{b}.expand", (3, 4, 6), when=when))
    return SearchSpace("stage", dims).with_prefix(prefix)


SPACE = (
    SearchSpace("head", [Choice("resolution", (24, 28, 32)), Choice("act", ("relu", "hswish"))])
    + stage_space("stage1")
    + stage_space("stage2", 3)
    + SearchSpace(
        "tail",
        [Choice("scale", (0.5, 0.75, 1.0)), Choice("se", (False, True)), Choice("bits", (4, 8, 32))],
    )
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def test_size_is_exact_count_of_canonical_configs():
    small = stage_space("s", 3) + SearchSpace("r", [Choice("res", (1, 2))])
    distinct = {c.key for c in small.all_configs()}
    assert small.size == len(distinct) == 2 * (9**2 + 9**3)


def test_size_of_large_space_factorises_over_stages():
    stage4 = 9**2 + 9**3 + 9**4
    stage3 = 9**2 + 9**3
    assert SPACE.size == 3 * 2 * stage4 * stage3 * 3 * 2 * 3


def test_max_and_min_take_last_and_first_values():
    assert SPACE.max()["stage1.depth"] == 4
    assert SPACE.max()["stage1.block3.kernel"] == 7
    assert SPACE.min()["stage1.depth"] == 2
    # block3 is inactive at depth 2, so min() reports its canonical value.
    assert SPACE.min()["stage1.block3.kernel"] == 3
    assert SPACE.max()["se"] is True and SPACE.min()["se"] is False


@given(seeds)
def test_json_round_trip_and_key_stability(seed):
    cfg = SPACE.sample(seed)
    again = Config.from_json(cfg.to_json())
    assert again == cfg and again.key == cfg.key and hash(again) == hash(cfg)
    reordered = Config(dict(reversed(list(cfg.items()))))
    assert reordered.key == cfg.key
    assert json.loads(cfg.to_json()) == dict(cfg)


def test_key_is_the_same_in_another_process():
    cfg = SPACE.max()
    code = "import sys, json; from nas import Config; print(Config(json.loads(sys.argv[1])).key)"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(dict(reversed(list(cfg.items()))))],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == cfg.key


def test_key_distinguishes_bool_int_and_float():
    assert Config({"a": 1}).key != Config({"a": True}).key
    assert Config({"a": 1}).key != Config({"a": 1.0}).key


def test_equality_with_a_plain_mapping_agrees_with_the_key():
    """A dict compares 1 == True == 1.0; a Config compares as its key does, from either side."""
    cfg = Config({"a": 1, "b": "x"})
    for other in ({"a": True, "b": "x"}, {"a": 1.0, "b": "x"}):
        assert cfg != other and other != cfg and cfg != Config(other)
    assert Config({"a": True}) != {"a": 1} and Config({"a": 0.5}) == {"a": 0.5}
    assert cfg == {"b": "x", "a": 1} == cfg and cfg == {"a": np.int64(1), "b": np.str_("x")}
    assert cfg != {"a": [1], "b": "x"} and cfg != {1: 1} and cfg != {"a": 1}


@given(seeds)
def test_canonical_is_idempotent_and_sampling_is_canonical(seed):
    cfg = SPACE.sample(seed)
    assert SPACE.canonical(cfg) == cfg
    assert SPACE.canonical(SPACE.canonical(cfg)) == SPACE.canonical(cfg)


@given(seeds)
def test_canonical_merges_configs_that_differ_only_in_inactive_dims(seed):
    rng = np.random.default_rng(seed)
    cfg = SPACE.sample(rng).replace(**{"stage1.depth": 2})
    other = cfg.replace(**{"stage1.block3.kernel": 7, "stage1.block2.expand": 6})
    assert SPACE.canonical(cfg).key == SPACE.canonical(other).key
    assert not SPACE.is_active(cfg, "stage1.block2.kernel")
    assert SPACE.is_active(cfg, "stage1.block1.kernel")


# B matters only when A == 1, C only when B == 0; B's canonical value is 0, so C's own condition holds whenever B
# is inactive: C must follow B out all the same.
NESTED = SearchSpace(
    "nested",
    [
        Choice("A", (0, 1)),
        Choice("B", (0, 1, 2), when={"A": (1,)}),
        Choice("C", (3, 5), when={"B": (0,)}),
        Choice("D", (1, 2)),
    ],
)


def test_a_dimension_conditioned_on_an_inactive_one_is_inactive():
    one, other = NESTED.canonical({"A": 0, "C": 3, "D": 1}), NESTED.canonical({"A": 0, "C": 5, "D": 1})
    assert one.key == other.key == NESTED.canonical({"A": 0, "D": 1}).key
    assert NESTED.inactive_names(one) == {"B", "C"} and not NESTED.is_active(one, "C")
    assert NESTED.is_active({"A": 1, "B": 0, "C": 5, "D": 1}, "C")
    assert not NESTED.is_active({"A": 1, "B": 2, "C": 3, "D": 1}, "C")
    # distinct configs: A=0 -> 1 x D; A=1 -> (B=0 -> 2 C, B=1/2 -> 1) x D = 4 x 2; with A=0's 2: 10
    brute = {
        NESTED.canonical(dict(zip("ABCD", v))).key
        for v in itertools.product((0, 1), (0, 1, 2), (3, 5), (1, 2))
    }
    assert NESTED.size == len(list(NESTED.all_configs())) == len(brute) == 10
    assert {c.key for c in NESTED.all_configs()} == brute
    # an inactive dimension gives no features, and mutation never spends itself on one
    assert NESTED.features(one)[NESTED.feature_names.index("C")] == 0.0
    assert NESTED.features({"A": 1, "B": 0, "C": 5, "D": 1})[NESTED.feature_names.index("C")] == 5.0
    # prob 1 flips A (making B matter) and then B away from 0, so C never matters and stays canonical
    rng = np.random.default_rng(0)
    assert all(NESTED.mutate(one, rng, prob=1.0)["C"] == 3 for _ in range(20))


@given(seeds)
def test_indices_round_trip(seed):
    cfg = SPACE.sample(seed)
    idx = SPACE.to_indices(cfg)
    assert idx.dtype == np.int64 and np.all(idx < SPACE.cardinalities)
    assert SPACE.from_indices(idx) == cfg


@given(seeds, st.floats(min_value=0.0, max_value=1.0))
@settings(max_examples=50)
def test_mutation_and_crossover_give_valid_canonical_configs(seed, prob):
    rng = np.random.default_rng(seed)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    for child in (SPACE.mutate(a, rng, prob), SPACE.crossover(a, b, rng)):
        assert SPACE.canonical(child) == child
        assert SPACE.validate(child) == child


def test_mutation_with_probability_one_changes_every_active_dimension():
    cfg = SPACE.max()
    child = SPACE.mutate(cfg, 0, prob=1.0)
    assert child["resolution"] != cfg["resolution"]
    assert child["act"] != cfg["act"]
    assert SPACE.mutate(cfg, 0, prob=0.0) == cfg


def test_crossover_takes_every_value_from_a_parent():
    a, b = SPACE.max(), SPACE.min()
    child = SPACE.crossover(a, b, 3)
    for name in ("resolution", "act", "scale", "se", "bits", "stage1.depth"):
        assert child[name] in (a[name], b[name])


def test_features_are_numeric_and_zero_for_inactive_blocks():
    cfg = SPACE.min()
    f = SPACE.features(cfg)
    names = SPACE.feature_names
    assert f.shape == (len(names),) and f.dtype == np.float64
    assert f[names.index("stage1.block3.kernel")] == 0.0
    assert f[names.index("stage1.block0.kernel")] == 3.0
    assert f[names.index("act=relu")] == 1.0 and f[names.index("act=hswish")] == 0.0
    assert SPACE.features_matrix([cfg, SPACE.max()]).shape == (2, len(names))


def test_validate_accepts_numpy_and_json_numbers():
    cfg = dict(SPACE.max())
    cfg["resolution"] = np.int64(32)
    cfg["scale"] = 1  # JSON may turn 1.0 into 1
    out = SPACE.validate(cfg)
    assert out["resolution"] == 32 and isinstance(out["resolution"], int)
    assert out["scale"] == 1.0 and isinstance(out["scale"], float)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"stage1.block0.kernel": 9}, "'stage1.block0.kernel': 9 is not allowed; choose one of [3, 5, 7]"),
        ({"se": 1}, "'se': 1 is not allowed; choose one of [False, True]"),
        ({"act": "gelu"}, "choose one of ['relu', 'hswish']"),
    ],
)
def test_bad_values_name_the_dimension_and_allowed_values(change, fragment):
    with pytest.raises(InvalidConfigError) as err:
        SPACE.validate({**SPACE.max(), **change})
    assert fragment in str(err.value)


def test_unknown_and_missing_dimensions_are_reported():
    with pytest.raises(InvalidConfigError, match="did you mean 'resolution'"):
        SPACE.validate({**SPACE.max(), "resolutoin": 28})
    cfg = dict(SPACE.max())
    del cfg["stage2.depth"]
    with pytest.raises(InvalidConfigError, match=r"lacks 1 dimension.*'stage2\.depth' takes one of \[2, 3\]"):
        SPACE.validate(cfg)
    with pytest.raises(InvalidConfigError, match="must be a mapping"):
        SPACE.validate([1, 2, 3])


def test_bad_indices_and_json_are_reported():
    with pytest.raises(InvalidConfigError, match="expected"):
        SPACE.from_indices([0, 1])
    bad = SPACE.to_indices(SPACE.max())
    bad[0] = 7
    with pytest.raises(
        InvalidConfigError, match=r"'resolution': index 7 out of range; use an integer in \[0, 2\]"
    ):
        SPACE.from_indices(bad)
    with pytest.raises(InvalidConfigError, match="does not parse"):
        Config.from_json("{not json")
    with pytest.raises(InvalidConfigError, match="must be an object"):
        Config.from_json("[1, 2]")


def test_bad_space_definitions_are_rejected():
    with pytest.raises(InvalidConfigError, match="listed twice"):
        Choice("k", (3, 3))
    with pytest.raises(InvalidConfigError, match="defined before"):
        SearchSpace("s", [Choice("k", (3, 5), when={"depth": (2,)}), Choice("depth", (1, 2))])
    with pytest.raises(InvalidConfigError, match="defined twice"):
        SearchSpace("s", [Choice("k", (3, 5)), Choice("k", (3, 5))])
    with pytest.raises(InvalidConfigError, match="not finite"):
        Choice("x", (float("nan"),))
    with pytest.raises(InvalidConfigError, match="not allowed"):
        Choice("x", ([1, 2],))


def test_a_condition_on_a_single_value_must_still_list_it():
    # when={"act": "relu"} was read as the values ("r", "e", "l", "u") and when={"depth": 2} as a TypeError
    for value in ("relu", 2):
        with pytest.raises(InvalidConfigError, match=rf"must list the allowed values.*\({value!r},\)"):
            Choice("k", (3, 5), when={"act": value})
    assert Choice("k", (3, 5), when={"act": ["relu"]}).when == {"act": ("relu",)}


def test_values_written_as_a_bare_string_or_number_are_refused():
    # Choice("act", ("relu")) (no comma: a string) became the choices "r", "e", "l", "u"; Choice("k", 3) a TypeError.
    for value in ("relu", 3):
        with pytest.raises(
            InvalidConfigError, match=rf"'x': values must list the choices, e.g. \({value!r},\)"
        ):
            Choice("x", value)
    assert Choice("x", ["relu"]).values == ("relu",)


def test_samples_unique_and_too_many():
    tiny = SearchSpace("tiny", [Choice("a", (1, 2)), Choice("b", ("x", "y"))])
    got = tiny.samples(4, seed=0, unique=True)
    assert len({c.key for c in got}) == 4
    with pytest.raises(ValueError, match="only 4"):
        tiny.samples(5, seed=0, unique=True)


def test_optuna_distributions_cover_every_dimension():
    dists = SPACE.optuna_distributions()
    assert list(dists) == list(SPACE.names)
    assert dists["act"].choices == ("relu", "hswish")


def test_space_prints_its_dimensions():
    text = repr(SPACE)
    assert "stage1.block0.kernel" in text and "size=" in text


def test_canonical_fills_inactive_dimensions_that_are_left_out():
    s = stage_space("s")
    short = {
        "s.depth": 2,
        **{f"s.block{b}.{k}": 5 if k == "kernel" else 4 for b in (0, 1) for k in ("kernel", "expand")},
    }
    cfg = s.canonical(short)
    assert cfg["s.block3.kernel"] == 3 and cfg["s.block2.expand"] == 3  # inactive: their canonical values
    assert cfg == s.canonical(
        {**short, "s.block2.kernel": 7, "s.block3.expand": 6}
    )  # given ones are reset too
    with pytest.raises(InvalidConfigError, match="lacks"):
        s.canonical({**short, "s.depth": 3})  # block2 is active at depth 3 and must be given
    with pytest.raises(InvalidConfigError, match=r"s\.depth"):
        s.canonical({**short, "s.depth": 9})  # a bad parent value is named, not a missing child
    with pytest.raises(InvalidConfigError, match="unknown"):
        s.canonical({**short, "s.nope": 1})


def test_validate_accepts_numpy_strings_bools_and_floats_of_a_users_own_code():
    # np.random.choice(["relu", "hswish"]) gives np.str_, comparisons of arrays np.bool_: the same values.
    space = SearchSpace(
        "np",
        [
            Choice("act", ("relu", "hswish")),
            Choice("se", (False, True)),
            Choice("sparsity", (0.5, "2:4", 1.0)),
        ],
    )
    rng = np.random.default_rng(0)
    cfg = space.validate(
        {"act": rng.choice(["relu"]), "se": np.arange(2)[1] > 0, "sparsity": np.float64(0.5)}
    )
    assert cfg.to_json() == '{"act":"relu","se":true,"sparsity":0.5}'
    assert space.validate({"act": "relu", "se": True, "sparsity": 1}) == space.max().replace(act="relu")
    with pytest.raises(InvalidConfigError, match="'se': 1 is not allowed"):
        space.validate({"act": "relu", "se": np.int64(1), "sparsity": 1.0})  # a number is still no bool


def test_a_condition_written_with_another_number_type_still_holds():
    # when={"depth": (2.0,)} on an int depth was accepted but never held, so "k" stayed inactive for good.
    for allowed in ((2.0,), (np.int64(2),), (np.float32(2),)):
        space = SearchSpace("t", [Choice("depth", (1, 2)), Choice("k", (3, 5), when={"depth": allowed})])
        assert space.size == 3
        assert space.canonical({"depth": 2, "k": 5})["k"] == 5
        assert space["k"].when == {"depth": (2,)} and type(space["k"].when["depth"][0]) is int


# The timeout is a guard only: counting takes milliseconds, enumerating 2**60 combinations never ends.
@pytest.mark.timeout(30)
def test_size_of_a_chain_of_conditions_does_not_enumerate_its_controllers():
    # Layer i exists only when layer i-1 does: 60 prefixes with l59 off plus 3 widths with it on.
    dims = [Choice("l0.on", (False, True))]
    dims += [Choice(f"l{i}.on", (False, True), when={f"l{i - 1}.on": (True,)}) for i in range(1, 60)]
    dims += [Choice("l59.width", (8, 16, 32), when={"l59.on": (True,)})]
    chain = SearchSpace("chain", dims)
    assert chain.size == 60 + 3
    assert "size=63" in repr(chain)
    short = SearchSpace("short", [*dims[:6], Choice("w", (1, 2), when={"l2.on": (True,), "l4.on": (False,)})])
    assert short.size == len({c.key for c in short.all_configs()})

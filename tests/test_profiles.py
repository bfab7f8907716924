"""Profile file format (nas.hw.profiles) and the built-in profiles (hw_profiles)."""

from __future__ import annotations

import gzip
import json
import math
import os
import re

import numpy as np
import pytest

import hw_profiles
from nas import Choice, Config, SearchSpace
from nas.hw.profiles import Profile, ProfileFormatError, meta_path

SPACE = SearchSpace("toy", [Choice("act", ("relu", "gelu")), Choice("k", (3, 5, 7))])


def make_profile(n: int = 6) -> Profile:
    configs = list(SPACE.all_configs())[:n]
    rng = np.random.default_rng(0)
    lat = rng.uniform(1, 10, n)
    energy = rng.uniform(0, 5, n)
    energy[1] = math.nan  # a missing extra value survives the round trip
    return Profile(
        "toy",
        configs,
        lat,
        latency_iqr_ms=lat * 0.01,
        latency_cv=np.full(n, 0.02),
        repeats=np.full(n, 50),
        extras={"energy_mj": energy},
        metadata={
            "device": "laptop",
            "backend": "torch",
            "batch_size": 1,
            "threads": 2,
            "versions": {"torch": "x"},
        },
    )


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_save_load_round_trip(tmp_path, suffix):
    p = make_profile()
    path = tmp_path / f"prof{suffix}"
    p.save(path)
    assert meta_path(path).is_file()
    q = Profile.load(path)
    assert q.space == "toy" and len(q) == len(p) and q.configs == p.configs
    np.testing.assert_array_equal(q.latencies, p.latencies)  # bit-exact floats
    np.testing.assert_array_equal(q.latency_iqr_ms, p.latency_iqr_ms)
    np.testing.assert_array_equal(q.repeats, p.repeats)
    np.testing.assert_array_equal(q.extras["energy_mj"], p.extras["energy_mj"])  # NaN == NaN here
    assert q.metadata == p.metadata
    if suffix == ".csv.gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    header = (
        (gzip.decompress(path.read_bytes()) if suffix == ".csv.gz" else path.read_bytes())
        .decode()
        .split("\n")[0]
    )
    assert header == "config_json,key,latency_ms,latency_iqr_ms,latency_cv,repeats,energy_mj"


def test_to_arrays_uses_space_features_and_checks_the_space(tmp_path):
    p = make_profile()
    X, y = p.to_arrays(SPACE)
    np.testing.assert_array_equal(X, SPACE.features_matrix(p.configs))
    np.testing.assert_array_equal(y, p.latencies)
    Xe, ye = p.to_arrays(SPACE, metric="energy_mj")  # the NaN row is left out
    assert len(ye) == len(p) - 1 and np.isfinite(ye).all() and Xe.shape[0] == len(ye)
    with pytest.raises(ValueError, match=r"'toy'.*'other'"):
        p.to_arrays(SPACE.renamed("other"))
    with pytest.raises(KeyError, match="energy_mj"):
        p.metric("power")


def test_constructor_rejects_bad_rows():
    cfgs = [Config({"act": "relu", "k": 3}), Config({"act": "relu", "k": 5})]
    with pytest.raises(ValueError, match="finite and > 0"):
        Profile("toy", cfgs, [1.0, -1.0])
    with pytest.raises(ValueError, match="2 values for 1 configs"):
        Profile("toy", cfgs[:1], [1.0, 2.0])
    with pytest.raises(ValueError, match="more than once"):
        Profile("toy", [cfgs[0], cfgs[0]], [1.0, 2.0])
    with pytest.raises(ValueError, match="plain JSON"):
        Profile("toy", cfgs, [1.0, 2.0], metadata={"when": object()})
    with pytest.raises(ValueError, match="clashes"):
        Profile("toy", cfgs, [1.0, 2.0], extras={"key": [1, 2]})


class _Crash(BaseException):
    pass


@pytest.mark.parametrize("new_table_in_place", [False, True])
def test_a_save_cut_by_a_crash_leaves_a_loadable_profile(tmp_path, monkeypatch, new_table_in_place):
    """The table used to be renamed into place before its metadata was written: a crash between the two left a
    pair the loader rejected (checksum), so `nas profile` could not go on until the user restored a file."""
    path = tmp_path / "p.csv"
    old = make_profile(4)
    old.save(path)
    new = make_profile(6)
    real_replace = os.replace

    def crash_at(src, dst):
        # the pending metadata, then the table, then the metadata are renamed: cut before one of the last two
        if str(dst) == str(meta_path(path) if new_table_in_place else path):
            raise _Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at)
    with pytest.raises(_Crash):
        new.save(path)
    monkeypatch.setattr(os, "replace", real_replace)
    loaded = Profile.load(path)
    assert loaded.configs == (new if new_table_in_place else old).configs
    if new_table_in_place:  # the load finished the save: the metadata is in place, the pending copy gone
        assert not (tmp_path / "p.csv.meta.json.pending").exists()
        assert json.loads(meta_path(path).read_text())["rows"] == 6
    new.save(path)  # a stale pending file from a save cut earlier does not get in the way
    assert Profile.load(path).configs == new.configs
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.csv", "p.csv.meta.json"]


def test_corrupted_files_fail_clearly(tmp_path):
    path = tmp_path / "p.csv.gz"
    make_profile().save(path)
    good = path.read_bytes()
    # truncated table
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ProfileFormatError, match="checksum"):
        Profile.load(path)
    # without the checksum, the truncated gzip itself is reported
    meta = json.loads(meta_path(path).read_text())
    del meta["table_sha256"]
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ProfileFormatError, match="gzip"):
        Profile.load(path)
    # an edited key no longer matches its config
    text = gzip.decompress(good).decode().split("\n")
    cells = text[1].split(",")
    key_field = next(i for i, c in enumerate(cells) if len(c) == 20)
    cells[key_field] = "0" * 20
    text[1] = ",".join(cells)
    path.write_bytes(gzip.compress("\n".join(text).encode()))
    with pytest.raises(ProfileFormatError, match="line 2: key"):
        Profile.load(path)
    # a non-integer repeat count
    text = gzip.decompress(good).decode().replace(",50,", ",fifty,", 1)
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ProfileFormatError, match="repeats 'fifty'"):
        Profile.load(path)
    # metadata that is not JSON
    meta_path(path).write_text("{not json")
    with pytest.raises(ProfileFormatError, match="not valid JSON"):
        Profile.load(path)
    # metadata file missing
    meta_path(path).unlink()
    with pytest.raises(
        ProfileFormatError, match=r"no metadata file .*Profile\(space_name, configs, latency_ms"
    ):
        Profile.load(path)
    with pytest.raises(ProfileFormatError, match="does not exist"):
        Profile.load(tmp_path / "nothing.csv")


def test_hand_edited_tables_load(tmp_path):
    """A table re-saved by a spreadsheet (byte-order mark, CRLF, a blank last line) still loads once its
    checksum is dropped, as the checksum error says; a duplicated row is named by key and row, not by its JSON."""
    path = tmp_path / "p.csv"
    original = make_profile()
    original.save(path)
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n")
    with pytest.raises(ProfileFormatError, match=re.escape("delete \"table_sha256\" from 'p.csv.meta.json'")):
        Profile.load(path)
    meta = json.loads(meta_path(path).read_text())
    del meta["table_sha256"]
    meta_path(path).write_text(json.dumps(meta))
    loaded = Profile.load(path)
    assert [c.key for c in loaded.configs] == [c.key for c in original.configs]
    assert np.array_equal(loaded.latencies, original.latencies)
    lines = text.splitlines(keepends=True)
    path.write_text(text + lines[2])
    meta["rows"] += 1
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(
        ProfileFormatError, match=rf"key {original.configs[1].key} is listed more than once \(rows 1 and 6"
    ):
        Profile.load(path)


def test_foreign_files_fail_clearly(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    meta_path(path).write_text(json.dumps({"name": "something else"}))
    with pytest.raises(ProfileFormatError, match="not a profile metadata file"):
        Profile.load(path)
    good = tmp_path / "good.csv"
    make_profile().save(good)
    meta = json.loads(meta_path(good).read_text())
    # a newer format version is refused rather than misread
    meta_path(path).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ProfileFormatError, match="format_version 99"):
        Profile.load(path)
    # right metadata, foreign table
    meta_path(path).write_text(json.dumps({k: v for k, v in meta.items() if k != "table_sha256"}))
    with pytest.raises(ProfileFormatError, match="header"):
        Profile.load(path)
    with pytest.raises(ValueError, match=r"\.csv or \.csv\.gz"):
        make_profile().save(tmp_path / "p.json")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "p.csv"
    old = make_profile(3)
    old.save(path)
    before = path.read_bytes(), meta_path(path).read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        make_profile(6).save(path)
    monkeypatch.undo()
    assert (path.read_bytes(), meta_path(path).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.csv.meta.json"]  # no temp files left
    assert len(Profile.load(path)) == 3
    # files get ordinary permissions, not mkstemp's 0600
    assert path.stat().st_mode & 0o044


def test_builtin_profiles_index():
    names = hw_profiles.available()
    assert names == sorted(
        f"nb201-{d}" for d in ("edgegpu", "raspi4", "edgetpu", "pixel3", "eyeriss", "fpga")
    )
    with pytest.raises(KeyError, match="nb201-raspi4") as err:
        hw_profiles.load("nb201-rasp14")
    assert str(err.value).startswith("no built-in hardware profile 'nb201-rasp14'; available: nb201-edgegpu")
    for name in names:
        assert hw_profiles.path_of(name).stat().st_size < 1_000_000
    # a device name alone, as `nas search --target` takes it
    assert hw_profiles.load("pixel3").metadata["device"] == "pixel3"
    with pytest.raises(KeyError, match="no built-in hardware profile 'pixel'"):
        hw_profiles.load("pixel")


def test_builtin_profile_device_name_must_be_unambiguous(tmp_path, monkeypatch):
    for space in ("nb201", "mobilenetv3"):
        (tmp_path / f"{space}-pixel3.csv").write_text("x")
        (tmp_path / f"{space}-pixel3.csv.meta.json").write_text("{}")
    monkeypatch.setattr(hw_profiles, "_DIR", tmp_path)
    with pytest.raises(
        KeyError, match="'pixel3' is ambiguous: mobilenetv3-pixel3, nb201-pixel3; use the full"
    ):
        hw_profiles.path_of("pixel3")
    assert hw_profiles.path_of("nb201-pixel3").name == "nb201-pixel3.csv"


def test_builtin_profile_contents():
    p = hw_profiles.load("nb201-edgetpu")
    assert p.space == "nb201" and len(p) == 15625 - 4699
    assert "HW-NAS-Bench" in p.metadata["citation"] and p.metadata["license"] == "MIT"
    assert any("4699 cells" in note for note in p.metadata["notes"])
    e = hw_profiles.load("nb201-eyeriss")
    assert len(e) == 15625 and set(e.extras) == {"energy_mj", "arithmetic_intensity"}
    assert (e.latencies > 0).all() and (e.repeats == 0).all() and np.isnan(e.latency_cv).all()

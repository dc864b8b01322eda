"""Property-based tests of the points CSV reader: any bytes either parse into exactly the
points they denote or raise :class:`~pseudocell.errors.InvalidInputError`, never anything
else (no IndexError, KeyError, csv.Error or UnicodeError leaking out)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pseudocell.data.points import read_points_csv
from pseudocell.errors import InvalidInputError

SETTINGS = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

coords = st.floats(allow_nan=False, allow_infinity=False, width=64)
# image references as a user writes them: any text without leading/trailing blanks
# (the reader strips them) and no line breaks csv would keep inside quotes
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                min_size=1, max_size=12).map(str.strip).filter(bool)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return tmp_path_factory.mktemp("points") / "points.csv"


def _write(path, header: list[str], rows: list[list[str]], *, bom: bool, crlf: bool,
           blank_every: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    for k, r in enumerate(rows):
        if blank_every and k % blank_every == 0:
            buf.write("\r\n" if crlf else "\n")  # blank lines are skipped
        w.writerow(r)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())


@st.composite
def plain_tables(draw):
    n = draw(st.integers(1, 8))
    refs = draw(st.lists(names, min_size=n, max_size=n))
    yx = draw(st.lists(st.tuples(coords, coords), min_size=n, max_size=n))
    img = draw(st.sampled_from(["image", "image_id", "Image", " IMAGE "]))
    extra = draw(st.lists(st.sampled_from(["value", "kind", "score", "note"]), unique=True,
                          max_size=2))
    cols = draw(st.permutations([img, "y", "x", *extra]))
    rows = []
    for r, (y, x) in zip(refs, yx):
        val = {img: r, "y": repr(y), "x": repr(x), **{e: draw(names) for e in extra}}
        rows.append([val[c] for c in cols])
    return cols, rows, refs, np.array(yx, np.float64).reshape(-1, 2)


@st.composite
def napari_tables(draw):
    three = draw(st.booleans())
    n = draw(st.integers(1, 8))
    yx = draw(st.lists(st.tuples(coords, coords), min_size=n, max_size=n))
    frames = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    axes = ["axis-0", "axis-1", "axis-2"] if three else ["axis-0", "axis-1"]
    cols = draw(st.permutations(["index", *axes]))
    rows = []
    for k, (f, (y, x)) in enumerate(zip(frames, yx)):
        vals = [repr(float(f)) if draw(st.booleans()) else str(f), repr(y), repr(x)] if three \
            else [repr(y), repr(x)]
        val = {"index": str(k), **dict(zip(axes, vals))}
        rows.append([val[c] for c in cols])
    refs = frames if three else [0] * n
    return three, cols, rows, refs, np.array(yx, np.float64).reshape(-1, 2)


@SETTINGS
@given(plain_tables(), st.booleans(), st.booleans(), st.integers(0, 3))
def test_plain_csv_parses_into_exactly_its_points(csv_path, table, bom, crlf, blank_every):
    cols, rows, refs, yx = table
    _write(csv_path, cols, rows, bom=bom, crlf=crlf, blank_every=blank_every)
    layout, got_refs, got_yx = read_points_csv(csv_path)
    assert layout == "plain"
    assert got_refs == refs
    np.testing.assert_array_equal(got_yx, yx)


@SETTINGS
@given(napari_tables(), st.booleans(), st.booleans())
def test_napari_csv_parses_into_exactly_its_points(csv_path, table, bom, crlf):
    three, cols, rows, refs, yx = table
    _write(csv_path, cols, rows, bom=bom, crlf=crlf, blank_every=0)
    layout, got_refs, got_yx = read_points_csv(csv_path)
    assert layout == ("napari3d" if three else "napari2d")
    assert got_refs == refs
    np.testing.assert_array_equal(got_yx, yx)


@SETTINGS
@given(st.integers(1, 6).filter(lambda k: k not in (2, 3)), st.integers(1, 3))
def test_napari_csv_with_other_axis_counts_is_refused(csv_path, n_axes, n_rows):
    header = ["index", *[f"axis-{a}" for a in range(n_axes)]]
    rows = [[str(k), *["1.0"] * n_axes] for k in range(n_rows)]
    _write(csv_path, header, rows, bom=False, crlf=False, blank_every=0)
    with pytest.raises(InvalidInputError, match=f"napari CSV with {n_axes} ax"):
        read_points_csv(csv_path)


def _check_result(result) -> None:
    """What a successful read returns, whatever the input was."""
    layout, refs, yx = result
    assert layout in ("plain", "napari2d", "napari3d")
    assert isinstance(yx, np.ndarray) and yx.dtype == np.float64 and yx.shape == (len(refs), 2)
    assert len(refs) >= 1
    kind = str if layout == "plain" else int
    assert all(type(r) is kind for r in refs)
    if layout == "napari2d":
        assert set(refs) == {0}


# bytes that look like CSV often enough to reach every branch of the reader
csvish = st.lists(st.sampled_from(["image", "image_id", "y", "x", "index", "axis-0", "axis-1",
                                   "axis-2", "axis-3", ",", ",", ",", "\n", "\r\n", "\"", "1",
                                   "2.5", "-3", "nan", "inf", "1e400", " ", "a.png", "\ufeff",
                                   "\x00", "é", "\t"]), max_size=40).map("".join)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), csvish.map(str.encode),
                 csvish.map(lambda s: s.encode("utf-16"))))
def test_any_bytes_parse_or_raise_a_typed_error(csv_path, data):
    csv_path.write_bytes(data)
    try:
        result = read_points_csv(csv_path)
    except InvalidInputError as e:
        assert str(csv_path) in str(e)
        return
    _check_result(result)


@SETTINGS
@given(plain_tables(), st.integers(0, 7), st.sampled_from([",", ",1", ",,", ",x"]))
def test_a_row_with_an_extra_field_is_refused_naming_its_line(csv_path, table, k, extra):
    cols, rows, refs, yx = table
    k %= len(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for n, r in enumerate(rows):
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow(r)
        buf.write(line.getvalue() + (extra if n == k else "") + "\n")
    csv_path.write_text(buf.getvalue())
    with pytest.raises(InvalidInputError, match=f"line {k + 2} has"):
        read_points_csv(csv_path)

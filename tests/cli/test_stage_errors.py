"""A bug inside a stage keeps its traceback (the run's log file; the console with
``--log-level DEBUG``); an expected failure stays a one-line error."""
from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from conftest import write_run_inputs
from pseudocell.cli import app
from pseudocell.errors import InvalidInputError
from pseudocell.stages.base import Input, Mode, StageSpec
from pseudocell.stages.loop import PARTIAL
from pseudocell.stages.modes import MODES

runner = CliRunner()


def _buggy(inp, cfg):
    return {"a": 1}["b"]  # a KeyError: a bug


def _refuses(inp, cfg):
    raise InvalidInputError("images: the stage refuses them; use others")


def _mode(name, fn):
    spec = StageSpec("check_inputs", fn, "LabelSelector", inputs={"images": Input("images")})
    return Mode(name=name, before=(spec,), round_stages=PARTIAL.round_stages,
                final_stages=PARTIAL.final_stages, initial_labels=PARTIAL.initial_labels,
                labels=PARTIAL.labels, products=PARTIAL.products,
                required_inputs=PARTIAL.required_inputs)


@pytest.fixture
def inputs(tmp_path, small_crops):
    return write_run_inputs(tmp_path, small_crops), tmp_path / "points.csv"


@pytest.fixture(autouse=True)
def modes(monkeypatch):
    monkeypatch.setitem(MODES, "buggy", _mode("buggy", _buggy))
    monkeypatch.setitem(MODES, "refusing", _mode("refusing", _refuses))
    yield
    logging.getLogger("pseudocell").handlers.clear()


def _run(tmp_path, inputs, mode, *global_opts):
    images, points = inputs
    out = tmp_path / f"run-{mode}-{len(global_opts)}"
    res = runner.invoke(app, [*global_opts, "run", "--images", str(images), "--points",
                              str(points), "--out", str(out), "--mode", mode, "--no-track"])
    return res, (out / "pseudocell.log").read_text()


def test_a_bug_keeps_its_traceback_in_the_log_and_with_debug(tmp_path, inputs):
    res, log = _run(tmp_path, inputs, "buggy")
    assert res.exit_code == 1
    assert "round 0 stage 'check_inputs' failed with an unexpected KeyError" in res.output
    assert "pseudocell.log" in res.output and "--log-level DEBUG" in res.output
    assert "Traceback" not in res.output  # the console stays one line by default
    assert "Traceback (most recent call last)" in log and "_buggy" in log
    res, _ = _run(tmp_path, inputs, "buggy", "--log-level", "DEBUG")
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output and "_buggy" in res.output


def test_an_expected_failure_is_one_line_without_traceback(tmp_path, inputs):
    res, log = _run(tmp_path, inputs, "refusing", "--log-level", "DEBUG")
    assert res.exit_code == 1
    assert "error: round 0 stage 'check_inputs' failed: images: the stage refuses them; " \
           "use others" in res.output
    assert "Traceback" not in res.output and "Traceback" not in log

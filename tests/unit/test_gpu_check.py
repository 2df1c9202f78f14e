"""`make gpu-wheels` and `make gpu-check` need nothing written by hand: the wheels are derived from the requirements
and the GPU image's list, the check's report judges the goals and counts the device tests. (The dry run of the
whole check, without CUDA, is tests/e2e/test_gpu_check_e2e.py.)"""

from __future__ import annotations

import json

from packaging.requirements import Requirement

from bench import gpu_check, gpu_wheels


def test_the_wheels_are_the_requirements_the_image_does_not_meet():
    result = gpu_wheels.plan(gpu_wheels.needed(), gpu_wheels.read_image())
    carried = result.carried
    # What the first GPU run lacked (the server and the realtime bench did not start), and what the image has at a
    # version transformers 5.23 does not accept.
    for name in ("flask-swagger-ui", "simple-websocket", "wsproto", "websockets", "regex", "jieba", "av", "soxr",
                 "flask", "gunicorn"):
        assert name in carried, name
    assert carried["transformers"] == "5.23.0"
    # The image's CUDA torch stack is never replaced, and what the image meets is not carried.
    for name in ("torch", "torchaudio", "numpy", "tokenizers", "safetensors"):
        assert name not in carried and name in result.kept, name
    assert not any(name.startswith(("nvidia-", "cuda-", "triton")) for name in carried)
    # Every runtime requirement is accounted for, one way or the other.
    for req in gpu_wheels.read_requirements(gpu_wheels.ROOT / "requirements.txt"):
        name = gpu_wheels.canonicalize_name(req.name)
        assert name in carried or name in result.kept, name


def test_the_dev_packages_carried_are_the_ones_the_check_imports():
    names = {gpu_wheels.canonicalize_name(r.name) for r in gpu_wheels.needed()}
    assert {"pytest", "requests", "websockets"} <= names  # the tests, the harness, the realtime bench
    assert not {"ruff", "playwright", "openai"} & names  # lint, browsers, the API tests' SDK: not on the GPU


def test_a_later_requirement_turns_an_image_package_into_a_carried_one():
    installed = {"app": ("1.0", ["lib>=1", "tool>=1", "extra"]), "tool": ("2.0", ["lib>=3"]), "lib": ("3.1", [])}
    result = gpu_wheels.plan([Requirement("app")], {"lib": "2.0", "tool": None, "extra": None},
                             installed=lambda name: installed[name])
    # lib 2.0 meets app's >=1 but not tool's >=3; tool's version is not known, and app asks for one
    assert result.carried == {"app": "1.0", "tool": "2.0", "lib": "3.1"}
    assert list(result.kept) == ["extra"]  # present, and nothing asks for a version of it
    assert [who for _, who in result.wanted["lib"]] == ["app", "tool"]


def test_check_names_what_is_missing_or_too_old():
    problems = gpu_wheels.check([Requirement("surely-not-a-package-here>=1"), Requirement("numpy<1"),
                                 Requirement("pytest>=1")])
    assert len(problems) == 2
    assert problems[0].startswith("surely-not-a-package-here: missing") and "does not satisfy numpy<1" in problems[1]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="5" time="81.5"><testcase classname="tests.unit.test_engine" name="test_a" time="1"/>
<testcase classname="tests.unit.test_engine" name="test_b" time="1"><failure message="assert False&#10;more">
trace</failure></testcase></testsuite></testsuites>"""


def test_the_report_is_one_json_and_a_summary(tmp_path):
    stages, out = tmp_path / "stages", tmp_path / "out"
    stages.mkdir()
    (stages / "stages.tsv").write_text("setup\t0\t12\t40\t\ntests\t1\t80\t110\t\nserver\t0\t70\t100\t\n")
    (stages / "tests.xml").write_text(JUNIT)
    (stages / "server.json").write_text(json.dumps({
        "stream": {"first_audio_s": 0.07, "frames_per_s": 520.0},
        "levels": {"16": {"frames_per_s": 3000.0, "first_audio_s": 0.2},
                   "32": {"frames_per_s": 9000.0, "first_audio_s": 0.3}}}))
    doc = gpu_check.report(stages, out, budget=345)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "summary.txt"]
    assert json.loads((out / "gpu_check.json").read_text())["meta"]["dry_run"] is False
    assert doc["tests"]["passed"] == 3 and doc["tests"]["failed"] == ["tests.unit.test_engine::test_b: assert False"]
    met = {g["goal"]: g["met"] for g in doc["goals"]}
    assert met["one stream, frames/s (HTTP)"] and met["one stream, first audio s (HTTP)"]
    assert met["16 streams, frames/s in total"] is False and met["32 streams, frames/s in total"]
    assert met["32 streams, first audio s (median)"] is False and met["64 streams, frames/s in total"] is None
    summary = (out / "summary.txt").read_text()
    assert "3 passed, 1 failed" in summary and "FAILED tests.unit.test_engine::test_b" in summary
    assert "stage tests: rc 1 in 80s" in summary and "32 streams, frames/s in total >= 8000: 9000 met" in summary

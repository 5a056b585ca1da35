"""BENCHMARKS.md is generated from benchmarks/*.md by tools/merge_benchmarks.py and never edited by
hand: regenerating it changes nothing, every source lands in it, and a new source adds a section."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _merge():
    spec = importlib.util.spec_from_file_location("merge_benchmarks", REPO / "tools" / "merge_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


merge = _merge()


def test_regenerating_benchmarks_md_changes_nothing():
    expected = (REPO / "BENCHMARKS.md").read_bytes()
    assert merge.render(REPO).encode("utf-8") == expected, (
        "BENCHMARKS.md is not what benchmarks/*.md give: edit the sources, then run python tools/merge_benchmarks.py")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "merge_benchmarks.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_source_is_a_section_and_the_page_opens_with_the_headline():
    text = merge.render(REPO)
    assert text.index("## Headline") < text.index("## Contents") < text.index("\n### ")
    for path in sorted((REPO / "benchmarks").glob("*.md")):
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        assert first.startswith("#"), f"{path.name} must start with its heading"
        assert "\n#" + first + "\n" in text, f"{path.name} is missing from BENCHMARKS.md"
    assert "<!--" not in text  # metadata lines stay in the sources
    rows = [line for line in text.split("## Contents")[0].splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 10 and all(line.count(" | ") == len(merge.HEADLINE_COLUMNS) - 1 for line in rows)


@pytest.fixture()
def copy(tmp_path):
    shutil.copytree(REPO / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("*.png", "*.json*"))
    return tmp_path


def test_a_new_source_adds_a_section_a_contents_entry_and_headline_rows(copy):
    before = merge.render(copy)
    (copy / "benchmarks" / "zebra.md").write_text(
        "## Zebra detection (issue 99): `tools/bench_zebra.py`\n"
        "<!-- headline: Detection | zebras | the default | AP 0.5 | a reference 0.4 -->\n\nSome numbers.\n\n### Details\n\nMore.\n")
    after = merge.render(copy)
    assert after.startswith(before.split("## Headline")[0])  # the intro is unchanged
    assert "| Detection | zebras | the default | AP 0.5 | a reference 0.4 |" in after
    assert f"## {merge.MORE}\n\n### Zebra detection (issue 99): `tools/bench_zebra.py`\n\nSome numbers.\n\n#### Details" in after
    assert "  - [Zebra detection (issue 99): `tools/bench_zebra.py`](#zebra-detection-issue-99-toolsbench_zebrapy)" in after
    assert after.rstrip().endswith("More.")  # the catch-all capability comes last

    (copy / "benchmarks" / "zebra.md").write_text("## Zebra detection\n<!-- capability: Vision tasks -->\n\nSome numbers.\n")
    filed = merge.render(copy)
    assert "## Vision tasks\n\n### Zebra detection\n\nSome numbers." in filed and f"## {merge.MORE}" not in filed
    assert "- [Vision tasks](#vision-tasks)" in filed


def test_a_malformed_headline_row_names_the_file(copy):
    (copy / "benchmarks" / "bad.md").write_text("## Bad\n<!-- headline: only | three | cells -->\n")
    with pytest.raises(SystemExit, match=r"bad\.md: a headline row needs 5 cells"):
        merge.render(copy)


def test_repeated_headings_get_githubs_numbered_anchors():
    seen: dict[str, int] = {}
    assert [merge._slug(t, seen) for t in ("Against the targets", "Against the targets", "`a.b` (x)")] == [
        "against-the-targets", "against-the-targets-1", "ab-x"]


def test_tools_readme_names_every_script():
    readme = (REPO / "tools" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((REPO / "tools").glob("*.py")) if f"| `{p.name}` |" not in readme]
    assert not missing, f"tools/README.md has no row for {missing}: say what each measures, on which data, how long it takes"

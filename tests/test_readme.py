"""The README shows the figures the benchmark scripts measured, not hand-edited ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import update_readme  # noqa: E402


def test_readme_tables_match_the_results_files(capsys):
    assert update_readme.main(["--check"]) == 0, capsys.readouterr().out


def test_every_image_the_readme_shows_is_in_the_repo():
    import re

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert links, "the README shows no images"
    assert [link for link in links if not (ROOT / link).is_file()] == []


def test_render_copies_a_table_and_a_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(update_readme, "RESULTS", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\nNote line.\n\n| x | y |\n|---|---|\n| 1 | 2 |\n")
    readme = "top\n<!-- results: a -->\nold\n<!-- /results -->\nmid\n<!-- results: a summary -->\n<!-- /results -->\n"
    out = update_readme.render(readme)
    assert out == ("top\n<!-- results: a -->\nNote line.\n\n| x | y |\n|---|---|\n| 1 | 2 |\n<!-- /results -->\n"
                   "mid\n<!-- results: a summary -->\nNote line.\n<!-- /results -->\n")
    assert update_readme.render(out) == out  # idempotent


def test_missing_results_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(update_readme, "RESULTS", tmp_path)
    monkeypatch.setattr(update_readme, "ROOT", tmp_path.parent)
    with pytest.raises(FileNotFoundError, match="nothere.md"):
        update_readme.render("<!-- results: nothere -->\n<!-- /results -->\n")


def test_differences_list_names_implemented_flags_as_such():
    """The README's differences from upstream describe how the implemented flags differ; none is
    called missing while the scripts accept it."""
    import re

    import detect
    import train

    text = (ROOT / "README.md").read_text()
    section = text.split("### Differences from upstream YOLOv5", 1)[1].split("\n## ", 1)[0]
    assert "not yet implemented" not in section
    for flag in ("--evolve", "--image-weights", "--quad", "--save-csv", "--visualize"):
        assert re.search(rf"`[^`]*{flag}\b", section), flag
    t = train.parse_opt(["--evolve", "2", "--image-weights", "--quad"])
    d = detect.parse_opt(["--source", "x.jpg", "--save-csv", "--visualize"])
    assert (t.evolve, t.image_weights, t.quad, d.save_csv, d.visualize) == (2, True, True, True, True)
    anchors = re.findall(r"\]\(#([a-z0-9-]+)\)", section)
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    assert anchors and set(anchors) <= headings

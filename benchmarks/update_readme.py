"""Copy the measured tables from benchmarks/results/*.md into README.md and models/attention/README.md.

    python benchmarks/update_readme.py          # rewrite the marked sections of README.md
    python benchmarks/update_readme.py --check  # exit 1 if README.md differs from the results

README.md marks each generated section with a pair of HTML comments::

    <!-- results: attention_zoo -->
    ...the body of benchmarks/results/attention_zoo.md...
    <!-- /results -->

so the README always shows what the benchmark scripts last measured, never hand-copied figures.
``<!-- results: NAME summary -->`` copies only the text before the file's first table (for
results whose full table is too long for the README, such as a learning curve per epoch).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
READMES = (README, ROOT / "models" / "attention" / "README.md")  # the files with generated sections
RESULTS = ROOT / "benchmarks" / "results"
SECTION = re.compile(r"(<!-- results: (?P<name>[\w.-]+)(?P<summary> summary)? -->\n)(?P<body>.*?)(<!-- /results -->)",
                     re.S)


def _body(name: str, summary: bool = False) -> str:
    md = RESULTS / f"{name}.md"
    if not md.is_file():
        raise FileNotFoundError(f"README.md asks for {md.relative_to(ROOT)}, which does not exist: run its benchmark")
    text = md.read_text().strip()
    text = re.sub(r"^# .*\n+", "", text)  # the file's own title: the README has its heading
    if summary:
        text = text.split("\n|", 1)[0].strip()
    return text + "\n"


def render(readme: str) -> str:
    """README text with every marked section replaced by its results file."""
    return SECTION.sub(lambda m: m.group(1) + _body(m.group("name"), bool(m.group("summary"))) + m.group(5), readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    opt = p.parse_args(argv)
    stale = []
    for f in (README, *[r for r in READMES if r != README]):
        old = f.read_text()
        new = render(old)
        if opt.check:
            if new != old:
                stale.append(f.relative_to(ROOT))
            continue
        f.write_text(new)
        print(f"{f.relative_to(ROOT)}: {len(SECTION.findall(old))} sections from benchmarks/results")
    if stale:
        print(f"{', '.join(map(str, stale))} out of date with benchmarks/results: run python benchmarks/update_readme.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

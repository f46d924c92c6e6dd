"""The package layers: utils/ is the lower layer and never imports models/ (nor the scripts above)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("models", "train", "val", "detect", "export", "compare", "heatmap", "hubconf", "demo", "benchmarks")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in `path`, the ones inside functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_utils_never_imports_an_upper_layer():
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
                 for p in sorted((ROOT / "utils").rglob("*.py"))
                 for line, mod in imported_modules(p) if mod.split(".")[0] in UPPER]
    assert offenders == []


def test_the_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from models.yolo import DetectionModel\n")
    assert imported_modules(f) == [(2, "models.yolo")]

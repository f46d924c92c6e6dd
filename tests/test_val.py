"""val.py: reference figures on coco128 (issue 3, acceptance 1 and 2) and the run() modes.

The two coco128 runs (one in-process through run(), one through the CLI) take ~15-25 s
each on a quiet 2-core machine; everything else uses a tiny synthetic set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import val
from utils.coco import COCO80_TO_91
from utils.logging import LOGGER

ROOT = Path(__file__).resolve().parents[1]

# the reference's figures for these files (upstream YOLOv5, yolov5n, coco128, 640, batch 32)
REF_ALL = {"images": 128, "instances": 929, "p": 0.572, "r": 0.508, "map50": 0.560, "map": 0.361}
REF_PERSON = {"instances": 254, "map50": 0.752, "map": 0.450}
REF_COCO = {"map50": 0.563, "map": 0.362}
TOL, TOL_COCO = 0.002, 0.003

ROW = re.compile(r"^\s*(?P<name>.+?)\s+(?P<images>\d+)\s+(?P<instances>\d+)\s+(?P<p>[\d.]+)\s+(?P<r>[\d.]+)"
                 r"\s+(?P<map50>[\d.]+)\s+(?P<map>[\d.]+)\s*$")


def table_rows(text: str) -> dict[str, dict]:
    """The results table's rows by class name, parsed from val.py's output."""
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            d = m.groupdict()
            rows[d["name"]] = {k: (int(v) if k in ("images", "instances") else float(v) if k != "name" else v)
                               for k, v in d.items()}
    return rows


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def coco128_run(tmp_path_factory, weights_n, coco128):
    """One in-process validation of yolov5n on coco128 with --save-json and plots."""
    cap, seen = _Capture(), {}
    LOGGER.addHandler(cap)
    try:
        results, maps, times = val.run("coco128.yaml", weights=weights_n, batch_size=32, imgsz=640, verbose=True,
                                       save_json=True, plots=True, project=tmp_path_factory.mktemp("val"),
                                       callbacks={"on_val_end": lambda nt, res, cm: seen.update(nt=nt, res=res)})
    finally:
        LOGGER.removeHandler(cap)
    save_dir = next(p for p in (line.split("Results saved to ")[-1] for line in cap.lines
                                if line.startswith("Results saved to ")))
    return {"results": results, "maps": maps, "times": times, "log": "\n".join(cap.lines), "seen": seen,
            "save_dir": Path(save_dir.splitlines()[0])}


def test_reference_all_classes(coco128_run):
    rows = table_rows(coco128_run["log"])
    row = rows["all"]
    assert row["images"] == REF_ALL["images"] and row["instances"] == REF_ALL["instances"]
    for k in ("p", "r", "map50", "map"):
        assert row[k] == pytest.approx(REF_ALL[k], abs=TOL), (k, row)
    mp, mr = coco128_run["results"][:2]
    assert mp == pytest.approx(REF_ALL["p"], abs=TOL) and mr == pytest.approx(REF_ALL["r"], abs=TOL)
    assert len(coco128_run["results"]) == 7  # P, R, mAP50, mAP50-95 and three (zero) losses


def test_reference_person_row(coco128_run):
    person = table_rows(coco128_run["log"])["person"]
    assert person["instances"] == REF_PERSON["instances"]
    assert person["map50"] == pytest.approx(REF_PERSON["map50"], abs=TOL)
    assert person["map"] == pytest.approx(REF_PERSON["map"], abs=TOL)
    res = coco128_run["seen"]["res"]
    assert res.classes[0] == 0 and res.ap[0, 0] == pytest.approx(REF_PERSON["map50"], abs=TOL)
    assert coco128_run["maps"][0] == pytest.approx(REF_PERSON["map"], abs=TOL)
    assert int(coco128_run["seen"]["nt"][0]) == 254 and len(coco128_run["maps"]) == 80


def test_reference_pycocotools(coco128_run):
    """Acceptance 2: the same detections scored by pycocotools against GT built from the labels."""
    m = re.search(r"pycocotools: mAP50 ([\d.]+), mAP50-95 ([\d.]+)", coco128_run["log"])
    assert m, coco128_run["log"][-2000:]
    map50, map5095 = float(m.group(1)), float(m.group(2))
    assert map50 == pytest.approx(REF_COCO["map50"], abs=TOL_COCO)
    assert map5095 == pytest.approx(REF_COCO["map"], abs=TOL_COCO)
    # with --save-json the returned mAPs are pycocotools' (as upstream)
    assert coco128_run["results"][2] == pytest.approx(REF_COCO["map50"], abs=TOL_COCO)
    assert coco128_run["results"][3] == pytest.approx(REF_COCO["map"], abs=TOL_COCO)


def test_outputs(coco128_run):
    d = coco128_run["save_dir"]
    for f in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png"):
        assert (d / f).stat().st_size > 1000, f
    preds = json.loads((d / "yolov5n_predictions.json").read_text())
    assert preds and set(preds[0]) == {"image_id", "category_id", "bbox", "score"}
    assert all(isinstance(p["image_id"], int) for p in preds)
    assert {p["category_id"] for p in preds} <= set(COCO80_TO_91)
    gt = json.loads((d / "annotations_from_labels.json").read_text())
    assert len(gt["images"]) == 128 and len(gt["annotations"]) == 929
    assert re.search(r"Speed: [\d.]+ms pre-process, [\d.]+ms inference, [\d.]+ms NMS per image at shape "
                     r"\(32, 3, 640, 640\)", coco128_run["log"])
    assert len(coco128_run["times"]) == 3 and all(t > 0 for t in coco128_run["times"])


def test_cli_prints_reference_table(tmp_path, weights_n, coco128):
    """Acceptance 1 through the command line, with --save-txt --save-conf."""
    cmd = [sys.executable, "val.py", "--weights", str(weights_n), "--data", "coco128.yaml", "--img", "640",
           "--batch", "32", "--verbose", "--save-txt", "--save-conf", "--noplots", "--project", str(tmp_path)]
    env = {**os.environ, "YOLO_DATASETS_DIR": str(coco128.parent)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    rows = table_rows(out)
    assert (rows["all"]["images"], rows["all"]["instances"]) == (128, 929)
    for k in ("p", "r", "map50", "map"):
        assert rows["all"][k] == pytest.approx(REF_ALL[k], abs=TOL), (k, rows["all"])
    assert rows["person"]["instances"] == 254
    assert rows["person"]["map50"] == pytest.approx(REF_PERSON["map50"], abs=TOL)
    assert rows["person"]["map"] == pytest.approx(REF_PERSON["map"], abs=TOL)
    assert len(rows) == 1 + 71  # 'all' plus the 71 classes that have labels in coco128
    labels = sorted((tmp_path / "exp" / "labels").glob("*.txt"))
    assert 100 < len(labels) <= 128
    line = labels[0].read_text().splitlines()[0].split()
    assert len(line) == 6 and 0 <= int(line[0]) < 80 and all(0 <= float(v) <= 1 for v in line[1:])
    assert not list((tmp_path / "exp").glob("*.png"))  # --noplots


# --------------------------------------------------------------------------------------------- small data
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "data"))
    try:
        from synthetic import make_synthetic
    finally:
        sys.path.remove(str(ROOT / "data"))
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=1, n_val=6, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def tiny_model():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov5n.yaml", nc=3)


def test_run_from_training(synthetic, tiny_model, tmp_path):
    """train.py's way: in-memory model and loader, losses averaged, model mode restored."""
    from utils.data.dataset import create_dataloader
    from utils.data.dataset_config import check_dataset

    data = check_dataset(synthetic)
    loader = create_dataloader(data["val"], 64, 4, 32, pad=0.5, rect=True, workers=0, nc=3)[0]
    calls = []

    def fake_loss(raw, targets):
        assert isinstance(raw, list) and len(raw) == 3 and targets.shape[1] == 6
        calls.append(1)
        return None, torch.tensor([1.0, 2.0, 3.0])

    tiny_model.train()
    results, maps, times = val.run(data, model=tiny_model, dataloader=loader, save_dir=tmp_path, plots=False,
                                   compute_loss=fake_loss)
    assert tiny_model.training  # restored
    assert len(calls) == len(loader) == 2
    assert len(results) == 7 and results[4:] == pytest.approx([1.0, 2.0, 3.0])
    assert maps.shape == (3,) and all(0 <= x <= 1 for x in results[:4])
    assert len(times) == 3


def test_speed_task_and_single_cls(synthetic, tiny_model, tmp_path):
    from models.checkpoint import model_record, save_checkpoint

    ckpt = save_checkpoint({"model": model_record(tiny_model)}, tmp_path / "tiny.pt")
    results, maps, _ = val.run(synthetic, weights=ckpt, imgsz=64, batch_size=4, task="speed", device="cpu",
                               workers=0, project=tmp_path, name="speed")
    assert len(results) == 7 and maps.shape == (3,)
    assert not (tmp_path / "speed" / "confusion_matrix.png").exists()  # speed saves nothing
    results, maps, _ = val.run(synthetic, weights=ckpt, imgsz=64, batch_size=4, single_cls=True, device="cpu",
                               workers=0, project=tmp_path, name="single", plots=True)
    assert maps.shape == (1,)
    assert (tmp_path / "single" / "confusion_matrix.png").exists()
    results, _, _ = val.run(synthetic, weights=ckpt, imgsz=64, batch_size=4, augment=True, device="cpu",
                            workers=0, project=tmp_path, name="tta", plots=False, save_txt=True)
    assert len(results) == 7 and (tmp_path / "tta" / "labels").is_dir()


def test_cli_class_count_mismatch(synthetic, weights_n, tmp_path):
    rc = val.main(["--weights", str(weights_n), "--data", str(synthetic), "--img", "64", "--device", "cpu",
                   "--project", str(tmp_path)])
    assert rc == 2


def test_format_row():
    line = val.format_row(("person", 128, 254, 0.71234, 0.5, 0.752, 0.45))
    assert table_rows(line)["person"] == {"name": "person", "images": 128, "instances": 254, "p": 0.712,
                                          "r": 0.5, "map50": 0.752, "map": 0.45}
    assert np.isclose(table_rows(line)["person"]["map50"], 0.752)


# ------------------------------------------------------------------ issue 13: outputs, folders, progress
@pytest.fixture
def two_cams(tmp_path):
    """camA/images/frame_0001.jpg and camB/images/frame_0001.jpg, each with one label."""
    import cv2

    rng = np.random.default_rng(0)
    for cam in ("camA", "camB"):
        (tmp_path / "data" / cam / "images").mkdir(parents=True)
        (tmp_path / "data" / cam / "labels").mkdir()
        cv2.imwrite(str(tmp_path / "data" / cam / "images" / "frame_0001.jpg"),
                    rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        (tmp_path / "data" / cam / "labels" / "frame_0001.txt").write_text("1 0.5 0.5 0.4 0.4\n")
    yml = tmp_path / "two.yaml"
    yml.write_text(f"path: {tmp_path / 'data'}\ntrain: [camA/images, camB/images]\nval: [camA/images, camB/images]\n"
                   "names: {0: circle, 1: square, 2: triangle}\n")
    return yml


def test_save_txt_one_file_per_image_and_reruns_overwrite(two_cams, tiny_model, tmp_path, capsys):
    from models.checkpoint import model_record, save_checkpoint

    ckpt = save_checkpoint({"model": model_record(tiny_model)}, tmp_path / "tiny.pt")
    kw = dict(weights=ckpt, imgsz=64, batch_size=2, device="cpu", workers=0, project=tmp_path / "runs", name="v",
              plots=False, save_txt=True)
    val.run(two_cams, **kw)
    labels = tmp_path / "runs" / "v" / "labels"
    files = sorted(p.relative_to(labels).as_posix() for p in labels.rglob("*.txt"))
    assert files == ["camA/images/frame_0001.txt", "camB/images/frame_0001.txt"]
    counts = [len((labels / f).read_text().splitlines()) for f in files]
    assert all(0 < n <= 300 for n in counts)
    val.run(two_cams, exist_ok=True, **kw)  # the same run folder again: files replaced, not appended to
    assert [len((labels / f).read_text().splitlines()) for f in files] == counts
    assert "Class" in capsys.readouterr().err  # the progress bar, headed by the table's columns


def test_failed_validation_leaves_no_run_folder(two_cams, tmp_path, capsys):
    project = tmp_path / "runs"
    assert val.main(["--weights", str(tmp_path / "missing.pt"), "--data", str(two_cams), "--project", str(project),
                     "--device", "cpu"]) == 2
    assert val.main(["--weights", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "nope.yaml"),
                     "--project", str(project), "--device", "cpu"]) == 2
    assert not project.exists() or not list(project.iterdir())


def test_progress_bar_during_training_validation(synthetic, tiny_model, tmp_path, capsys):
    from utils.data.dataset import create_dataloader
    from utils.data.dataset_config import check_dataset

    data = check_dataset(synthetic)
    loader = create_dataloader(data["val"], 64, 3, 32, pad=0.5, rect=True, workers=0, nc=3)[0]
    val.run(data, model=tiny_model, dataloader=loader, save_dir=tmp_path, plots=False)
    err = capsys.readouterr().err
    assert re.search(r"100%\|.*\| 2/2", err), err


# ------------------------------------------------------------------ issue 22: COCO JSON image ids
@pytest.fixture
def mixed_names(tmp_path):
    """camA/images and camB/images each with 000000000009.jpg, img_71.jpg and f0.jpg (6 different
    images, one label each): numeric and text stems mixed, every name in two folders."""
    import cv2

    rng = np.random.default_rng(1)
    for cam in ("camA", "camB"):
        (tmp_path / "data" / cam / "images").mkdir(parents=True)
        (tmp_path / "data" / cam / "labels").mkdir()
        for stem in ("000000000009", "img_71", "f0"):
            cv2.imwrite(str(tmp_path / "data" / cam / "images" / f"{stem}.jpg"),
                        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
            (tmp_path / "data" / cam / "labels" / f"{stem}.txt").write_text("1 0.5 0.5 0.4 0.4\n")
    yml = tmp_path / "mixed.yaml"
    yml.write_text(f"path: {tmp_path / 'data'}\ntrain: [camA/images, camB/images]\nval: [camA/images, camB/images]\n"
                   "names: {0: circle, 1: square, 2: triangle}\n")
    return yml


def test_save_json_mixed_and_same_names_one_id_per_image(mixed_names, tiny_model, tmp_path):
    """Issue 22: pycocotools scores the run (no str/int mix) and the 6 images keep 6 ids, the
    same in the predictions and the ground truth; the numeric COCO name keeps its number."""
    from models.checkpoint import model_record, save_checkpoint
    from tests.logcapture import LogLines

    ckpt = save_checkpoint({"model": model_record(tiny_model)}, tmp_path / "tiny.pt")
    with LogLines() as log:
        val.run(mixed_names, weights=ckpt, imgsz=64, batch_size=4, device="cpu", workers=0, project=tmp_path,
                name="j", plots=False, save_json=True)
    assert "pycocotools: mAP50" in log.text and "evaluation failed" not in log.text, log.text
    gt = json.loads((tmp_path / "j" / "annotations_from_labels.json").read_text())
    preds = json.loads((tmp_path / "j" / "tiny_predictions.json").read_text())
    gt_ids = [im["id"] for im in gt["images"]]
    assert len(gt_ids) == 6 and len(set(gt_ids)) == 6 and all(isinstance(i, int) for i in gt_ids)
    assert 9 in gt_ids
    assert {p["image_id"] for p in preds} == set(gt_ids)  # every image has detections (random model, conf 0.001)
    assert sorted(a["image_id"] for a in gt["annotations"]) == sorted(gt_ids)  # one label per image


def test_save_json_ids_come_from_the_official_annotation_file(tmp_path, weights_n, bus):
    """A COCO-classes dataset with annotations/instances_val2017.json: ids are the file's; an image the
    file lacks (img_x.jpg) used to get the next free number of the run (31), another image's id in the
    file, and was scored against that image's ground truth. Now: a new id above the file's, a warning
    with the count, and the COCO evaluation covers the listed images only."""
    import cv2

    from tests.logcapture import LogLines
    from utils.coco import COCO_NAMES

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "annotations").mkdir()
    picture = cv2.resize(cv2.imread(str(bus)), (64, 64))  # people: yolov5n.pt detects something
    for stem in ("000000000009", "000000000025", "000000000030", "img_x"):
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), picture)
        (root / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    listed = {9: "000000000009.jpg", 25: "000000000025.jpg", 30: "000000000030.jpg", 31: "000000000031.jpg"}
    anno = {"images": [{"id": i, "file_name": f, "height": 64, "width": 64} for i, f in listed.items()],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": [19.2, 19.2, 25.6, 25.6],
                             "area": 655.36, "iscrowd": 0} for k, i in enumerate(listed)],
            "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(anno))
    yml = tmp_path / "coco.yaml"
    yml.write_text(f"path: {root}\ntrain: images\nval: images\nnames: {json.dumps(COCO_NAMES)}\n")
    with LogLines() as log:
        val.run(yml, weights=weights_n, imgsz=64, batch_size=4, device="cpu", workers=0, project=tmp_path, name="j",
                plots=False, save_json=True)
    assert "1 of 4 val images are not in" in log.text and "pycocotools: mAP50" in log.text, log.text
    preds = json.loads((tmp_path / "j" / "yolov5n_predictions.json").read_text())
    assert {p["image_id"] for p in preds} == {9, 25, 30, 32}  # img_x: above the file's 31, never 31
    scored = json.loads((tmp_path / "j" / "yolov5n_predictions_in_annotations.json").read_text())
    assert {p["image_id"] for p in scored} == {9, 25, 30}

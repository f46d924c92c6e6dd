"""detect.py against the reference detections of the official yolov5n on bus.jpg and zidane.jpg."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import detect

ROOT = Path(__file__).resolve().parents[1]

# class, x1, y1, x2, y2, conf: measured with upstream YOLOv5 on these files (see the issue)
REFERENCE = {
    "bus": [(5, 23, 228, 806, 781, 0.492), (0, 0, 573, 72, 893, 0.519), (0, 216, 409, 346, 865, 0.787),
            (0, 683, 367, 810, 881, 0.805), (0, 55, 398, 211, 889, 0.876)],
    "zidane": [(27, 436, 434, 503, 712, 0.268), (0, 134, 181, 742, 720, 0.412), (0, 743, 40, 1154, 715, 0.788)],
}
SIZES = {"bus": (810, 1080), "zidane": (1280, 720)}


def read_labels(path: Path, w: int, h: int) -> list[tuple]:
    rows = []
    for line in path.read_text().splitlines():
        c, cx, cy, bw, bh, conf = map(float, line.split())
        rows.append((int(c), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, conf))
    return sorted(rows, key=lambda r: r[5])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, weights_n, shared):
    """The acceptance command, run once as a user would."""
    project = tmp_path_factory.mktemp("detect")
    cmd = [sys.executable, str(ROOT / "detect.py"), "--weights", str(weights_n), "--source", str(shared / "images"),
           "--save-txt", "--save-conf", "--project", str(project)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return project / "exp", out.stderr + out.stdout


@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_reference_detections(reference_run, name):
    save_dir, _ = reference_run
    got = read_labels(save_dir / "labels" / f"{name}.txt", *SIZES[name])
    want = sorted(REFERENCE[name], key=lambda r: r[5])
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert g[0] == w[0]
        assert np.abs(np.array(g[1:5]) - np.array(w[1:5])).max() <= 2, (g, w)
        assert abs(g[5] - w[5]) <= 0.01, (g, w)


def test_output_files_and_log_lines(reference_run):
    save_dir, log = reference_run
    assert (save_dir / "bus.jpg").is_file() and (save_dir / "zidane.jpg").is_file()
    im = cv2.imread(str(save_dir / "bus.jpg"))
    assert im.shape == (1080, 810, 3)
    assert "bus.jpg: 640x480 4 persons, 1 bus," in log
    assert "zidane.jpg: 384x640 2 persons, 1 tie," in log
    assert "Speed:" in log


def test_folder_glob_txt_sources_and_flags(tmp_path, weights_n, bus, zidane):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(bus, imgs / "a.jpg")
    shutil.copy(zidane, imgs / "b.jpg")
    (imgs / "notes.md").write_text("not an image")
    lst = tmp_path / "list.txt"
    lst.write_text("imgs/b.jpg\n")
    kw = dict(weights=weights_n, imgsz=320, project=tmp_path / "runs", device="cpu")

    d, res = detect.run(source=imgs, **kw)  # folder: both images, annotated copies saved
    assert sorted(Path(k).name for k in res) == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in d.iterdir()) == ["a.jpg", "b.jpg"]

    d, res = detect.run(source=str(imgs / "*.jpg"), nosave=True, save_txt=True, **kw)  # glob
    assert d.name == "exp2"
    assert sorted(p.name for p in d.iterdir()) == ["labels"]  # --nosave: no images
    assert sorted(p.name for p in (d / "labels").iterdir()) == ["a.txt", "b.txt"]
    assert all(len(ln.split()) == 5 for ln in (d / "labels" / "a.txt").read_text().splitlines())

    d, res = detect.run(source=lst, save_crop=True, classes=[0], nosave=True, **kw)  # .txt list, crops, class filter
    assert list(res) == [str(imgs / "b.jpg")]
    assert (res[str(imgs / "b.jpg")][:, 5] == 0).all()
    crops = list((d / "crops").rglob("*.jpg"))
    assert crops and {p.parent.name for p in crops} == {"person"}
    assert len(crops) == len(res[str(imgs / "b.jpg")])


def test_video_source_writes_annotated_video(tmp_path, weights_n, bus):
    im = cv2.resize(cv2.imread(str(bus)), (320, 416))
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 416))
    for k in range(4):
        w.write(np.roll(im, 8 * k, axis=1))
    w.release()
    d, res = detect.run(weights=weights_n, source=video, imgsz=320, project=tmp_path / "runs", save_txt=True)
    out = cv2.VideoCapture(str(d / "clip.mp4"))
    assert int(out.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    ok, frame = out.read()
    assert ok and frame.shape == (416, 320, 3)
    assert sorted(p.name for p in (d / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(1, 5)]


def test_missing_source_and_weights_are_clear(tmp_path, weights_n, capsys):
    assert detect.main(["--weights", str(weights_n), "--source", str(tmp_path / "nope"),
                        "--project", str(tmp_path)]) == 2
    assert "nope' does not exist" in capsys.readouterr().err
    assert detect.main(["--weights", str(tmp_path / "missing.pt"), "--source", str(tmp_path),
                        "--project", str(tmp_path)]) == 2
    assert "missing.pt' not found" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 13: bad sources, names, folders
def _jpeg(path: Path, seed: int, size: tuple[int, int] = (96, 128)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return path


def test_bad_files_are_skipped_and_the_run_goes_on(tmp_path, weights_n, capsys):
    src = tmp_path / "mixed"
    _jpeg(src / "a.jpg", 0)
    (src / "b_empty.avi").write_bytes(b"")  # 0 bytes: does not open as a video
    _jpeg(src / "c.jpg", 1)
    (src / "d_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a picture")
    (src / "e_fake.mp4").write_bytes(cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()[:2000])
    (src / "f_notes.png").write_text("text, not a png")
    d, res = detect.run(weights=weights_n, source=src, imgsz=64, project=tmp_path / "runs", device="cpu", save_txt=True)
    log = capsys.readouterr().err
    assert {"a.jpg", "c.jpg"} <= {Path(k).name for k in res}  # c.jpg comes after the bad files
    for bad in ("b_empty.avi", "d_broken.jpg", "f_notes.png"):
        assert f"{bad}: skipped" in log, log
    assert "-9223372036854775808" not in log and "/-" not in log  # no nonsense frame counts
    done = next(ln for ln in log.splitlines() if "Done:" in ln)
    n_skipped = int(done.split(",")[-1].split()[0])
    assert n_skipped >= 3 and f"{len(res)} file(s) processed" in done
    assert (d / "labels" / "a.txt").is_file() and (d / "labels" / "c.txt").is_file()


def test_detect_reads_images_like_the_dataset_does(tmp_path):
    """One reader for train, val and detect: EXIF orientation applied the same way."""
    from PIL import Image

    from utils.data import images, sources
    from utils.data.dataset import read_image as dataset_reader

    im = Image.new("RGB", (60, 30), (0, 0, 255))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    f = tmp_path / "rot.jpg"
    im.save(f, exif=exif)
    assert sources.read_image is images.read_image is dataset_reader
    frame = next(sources.iter_frames(f))
    assert frame.image.shape == dataset_reader(str(f)).shape == (60, 30, 3)


def test_same_names_in_different_folders_get_distinct_outputs(tmp_path, weights_n):
    data = tmp_path / "data"
    a = _jpeg(data / "camA" / "images" / "frame_0001.jpg", 0)
    b = _jpeg(data / "camB" / "images" / "frame_0001.jpg", 1, size=(128, 96))
    kw = dict(weights=weights_n, imgsz=64, project=tmp_path / "runs", device="cpu", save_txt=True, conf_thres=0.0001)
    d, res = detect.run(source=str(data / "**" / "*.jpg"), **kw)
    assert set(res) == {str(a), str(b)}
    for cam, shape in (("camA", (96, 128, 3)), ("camB", (128, 96, 3))):
        assert cv2.imread(str(d / cam / "images" / "frame_0001.jpg")).shape == shape
        assert (d / "labels" / cam / "images" / "frame_0001.txt").is_file()
    n_lines = len((d / "labels" / "camA" / "images" / "frame_0001.txt").read_text().splitlines())
    assert n_lines > 0
    d2, _ = detect.run(source=str(data / "**" / "*.jpg"), exist_ok=True, **kw)  # a rerun overwrites
    assert d2 == d
    assert len((d / "labels" / "camA" / "images" / "frame_0001.txt").read_text().splitlines()) == n_lines


def test_failed_runs_leave_no_run_folder(tmp_path, weights_n, capsys):
    project = tmp_path / "runs"
    assert detect.main(["--weights", str(weights_n), "--source", str(tmp_path / "missing"),
                        "--project", str(project)]) == 2
    assert detect.main(["--weights", str(tmp_path / "missing.pt"), "--source", str(tmp_path),
                        "--project", str(project)]) == 2
    assert not project.exists() or not list(project.iterdir())


def test_no_source_says_what_to_pass(capsys):
    with pytest.raises(SystemExit) as e:
        detect.main([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no --source given" in err and "--source path/to/images" in err


def test_exit_code_when_every_input_is_skipped(tmp_path, weights_n, capsys):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.avi").write_bytes(b"")
    (src / "b.jpg").write_bytes(b"")
    args = ["--weights", str(weights_n), "--source", str(src), "--imgsz", "64", "--project", str(tmp_path / "runs")]
    assert detect.main(args) == 1
    err = capsys.readouterr().err
    assert "0 file(s) processed" in err and "2 skipped" in err
    assert err.strip().splitlines()[-1].startswith("ERROR: nothing processed")
    _jpeg(src / "c.jpg", 0)  # one readable image among the bad ones: the run succeeds
    assert detect.main(args) == 0
    assert "1 file(s) processed" in capsys.readouterr().err


def test_speed_line_gives_the_shape_fed_to_a_fixed_batch_export(tmp_path):
    """issue 14 QA: a fixed batch-4 export runs each image padded to 4; the Speed line said (1, 3, h, w)."""
    import export
    from models.yolo import DetectionModel
    from tests.logcapture import LogLines

    img = tmp_path / "im.jpg"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    model = DetectionModel("yolov5n.yaml", nc=2).eval().fuse()
    for batch, want in ((4, "at shape (4, 3, 64, 64) (each image padded to the export's fixed batch of 4)"),
                        (1, "at shape (1, 3, 64, 64)")):
        f = export.export_model(model, tmp_path / f"b{batch}", ("onnx",), imgsz=(64, 64), batch_size=batch)["onnx"]
        with LogLines() as log:
            detect.run(weights=f, source=img, imgsz=64, project=tmp_path, name=f"b{batch}", nosave=True)
        speed = [ln for ln in log.lines if ln.startswith("Speed:")]
        assert len(speed) == 1 and speed[0].endswith(want), speed


def test_annotation_follows_the_image_size():
    """Issue 22: on a 160-px image a box is 1 px wide and its label tab about 9 px tall (the
    old fixed 3 px / scale 1 tab hid 20-px objects); a 640-px image keeps 2 px and scale 0.67."""
    import numpy as np

    from utils.plots import Annotator

    small = Annotator(np.zeros((160, 160, 3), np.uint8))
    assert small.lw == 1 and small.font_scale == 0.3
    small.box_label((60, 60, 100, 100), "triangle 0.91", color=(0, 0, 255))
    rows = np.nonzero(small.result()[:60, :, 2].max(1))[0]  # the tab above the box
    assert 6 <= len(rows) <= 12
    thick = Annotator(np.zeros((160, 160, 3), np.uint8), line_width=3)  # --line-thickness 3: text stays small
    assert thick.font_scale == 0.3
    big = Annotator(np.zeros((640, 640, 3), np.uint8))
    assert big.lw == 2 and abs(big.font_scale - 2 / 3) < 1e-9


@pytest.mark.parametrize("shape, box", [((160, 160), (130, 60, 158, 90)), ((48, 48), (10, 10, 40, 40)),
                                        ((100, 2000), (900, 20, 970, 90))])
def test_label_tabs_stay_inside_the_image(shape, box):
    """A box at the right edge (the demo's triangle), a 48-px image narrower than its label, a
    2000x100 strip: the whole tab is drawn inside the image, and on the strip it is sized from the
    short side (about 9 px, not 27 px over a 70-px object)."""
    import numpy as np

    from utils.plots import Annotator

    a = Annotator(np.zeros((*shape, 3), np.uint8))
    a.box_label(box, "triangle 0.81", color=(0, 0, 255))
    red = a.result()[:, :, 2] > 0
    cols = np.nonzero(red[: box[1]].any(0) if box[1] > 12 else red.any(0))[0]
    import cv2

    w = cv2.getTextSize("triangle 0.81", cv2.FONT_HERSHEY_SIMPLEX, a.font_scale, max(a.lw - 1, 1))[0][0]
    assert cols.max() < shape[1] and cols.max() - cols.min() + 1 >= min(w, shape[1]) - 1  # the whole tab fits
    if shape == (100, 2000):
        rows = np.nonzero(red[: box[1], 800:1100].any(1))[0]
        assert a.font_scale == 0.3 and len(rows) <= 12

"""DistributedDataParallel on the CPU: torchrun with 2 processes (Gloo), one epoch on 8 tiny images."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

from data.synthetic import make_synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(tmp_path):
    data = make_synthetic(tmp_path / "synth", n_train=8, n_val=4, imgsz=128, seed=0)
    project, digests = tmp_path / "runs", tmp_path / "digests"
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               YOLO_TRAIN_DIGEST_DIR=str(digests))
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "train.py"), "--data", str(data), "--weights", "", "--cfg", "yolov5n.yaml", "--img", "128",
         "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu", "--noplots",
         "--project", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        out, err = proc.communicate()
        raise AssertionError("torchrun did not finish in 300 s:\n" + err[-4000:]) from None
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    # one run folder, written by rank 0 only
    assert sorted(p.name for p in project.iterdir()) == ["exp"]
    run = project / "exp"
    assert (run / "weights" / "last.pt").is_file() and (run / "weights" / "best.pt").is_file()
    with open(run / "results.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0"]
    # rank 1 logs warnings only: the summary lines appear once
    assert err.count("Starting training for 1 epochs") == 1
    # both processes end with the same weights
    d0, d1 = (digests / "rank0.sha256").read_text(), (digests / "rank1.sha256").read_text()
    assert d0 == d1 and len(d0.strip()) == 64

"""The README's out-of-the-box evaluation: `ovseg-eval bag` on the SYNTHETIC labelled
sample bag that scripts/make_sample_bag.py writes, run exactly as the README says."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_command() -> list:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^ovseg-eval bag --bag data/sample/labelled_bag(?:.*\\\n)*.*$", text, re.M)
    assert m, "README has no `ovseg-eval bag --bag data/sample/labelled_bag ...` line"
    return shlex.split(m.group(0).replace("\\\n", " "))


def test_readme_sample_evaluation_runs(tmp_path):
    gen = subprocess.run([sys.executable, "scripts/make_sample_bag.py", "--out",
                          str(tmp_path / "data" / "sample" / "sample_bag"), "--labelled-only"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    assert "SYNTHETIC" in gen.stdout
    classes = (tmp_path / "data" / "sample" / "labelled_bag_classes.txt").read_text()
    assert "synthetic" in classes.lower()

    cmd = _readme_command()
    # the README's relative paths: data/ and out/ from the temporary directory, config/
    # from the repository
    cmd = [str(Path(sys.executable).parent / cmd[0])] + [
        str(ROOT / a) if a.startswith("config/") else a for a in cmd[1:]] + ["--quiet"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out" / "eval_sample"
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == 6 and results["finished"]
    assert results["classes"] == ["sky", "grass", "road", "building", "tree"]
    assert (out / "report.md").is_file()

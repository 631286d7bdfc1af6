"""A wheel built from the repository carries the data folders targets/ and schedules/."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_targets_and_schedules(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("sparse_tvm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in (ROOT / "targets").glob("*.toml"):
        assert f"sparse_tvm/_data/targets/{preset.name}" in names
    assert "sparse_tvm/_data/schedules/README.md" in names
    assert "sparse_tvm/cli/main.py" in names

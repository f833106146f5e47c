"""tools/digits_ceiling.py: the raw-pixel reference for the composed-image task."""

import json
import subprocess
import sys
from pathlib import Path


def test_reference_classifier_reports_every_digit_and_sees_inversion(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "ceiling.json"
    result = subprocess.run(
        [sys.executable, str(repo / "tools" / "digits_ceiling.py"), "--split", "val", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=repo,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["split"] == "val"
    assert set(figures["rotated_or_mirrored_by_digit"]) == {str(d) for d in range(10)}
    assert all(0 <= a <= 1 for a in figures["rotated_or_mirrored_by_digit"].values())
    # black ink on white cannot be mistaken for any other variant: a check that transforms are applied
    assert figures["variant_only"]["inverted"] > 0.99
    # 40 classes: far better than chance, yet short of perfect on writers it never saw
    assert 0.5 < figures["all"] < 1.0
    assert "| 8 |" in result.stdout

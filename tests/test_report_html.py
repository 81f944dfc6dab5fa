"""REPORT.html: one self-contained file (figures inlined) that a browser opens and renders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salbench.report import build_report

DATA = Path(__file__).parent / "data" / "results_small.csv"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# The flags a sandboxed, offline machine needs (no background networking, no GPU, a fresh profile).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def test_html_report_is_self_contained(tmp_path):
    md = build_report(DATA, tmp_path / "report")
    html = (tmp_path / "report" / "REPORT.html").read_text()
    assert md.with_suffix(".html").is_file()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "<h2>Summary</h2>" in html
    images = html.count("<img")
    assert images >= 1 and html.count('src="data:image/png;base64,') == images  # nothing to fetch


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium; .ci/run installs it)")
def test_html_report_renders_in_headless_chromium(tmp_path):
    build_report(DATA, tmp_path / "report")
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1400",
            (tmp_path / "report" / "REPORT.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1200)
    dark = (pixels < 128).mean()  # text, table rules, figure ink on a white page
    assert 0.005 < dark < 0.5 and pixels.std() > 20, (dark, pixels.std())

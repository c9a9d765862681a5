"""The HTML reports render in a real browser: headless Chromium loads each report, and a
script run in the page fails it on a broken image or an empty section.

`.ci/run` installs Chromium from the system packages when it is missing; where it cannot be
installed this test is skipped with that reason (set ``FORGETLAB_CHROMIUM`` to a binary).
The check: every ``<img>`` has loaded (``complete`` and ``naturalWidth > 0``), and every
``<h2>`` section holds something before the next ``<h2>`` (text, a table, a figure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from forgetlab.cli import main
from forgetlab.report import build_report

CHECK = """
<script>
window.addEventListener("load", () => {
  const problems = [];
  const images = [...document.images];
  images.forEach((img, i) => {
    if (!img.complete || img.naturalWidth === 0) problems.push(`image ${i} (${img.alt}) did not load`);
  });
  const headings = [...document.querySelectorAll("h2")];
  headings.forEach((h) => {
    let node = h.nextElementSibling, content = false;
    while (node && node.tagName !== "H2") {
      if (node.tagName === "SCRIPT" || node.id === "forgetlab-check") { node = node.nextElementSibling; continue; }
      if (node.innerText.trim() || node.querySelector("img, table, svg")) content = true;
      node = node.nextElementSibling;
    }
    if (!content) problems.push(`section '${h.innerText}' is empty`);
  });
  const out = document.createElement("pre");
  out.id = "forgetlab-check";
  out.textContent = JSON.stringify({images: images.length, sections: headings.length, problems});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str | None:
    for name in (os.environ.get("FORGETLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def render(page: Path, tmp_path: Path) -> dict:
    """Load ``page`` (with the check appended) in headless Chromium; the check's verdict."""
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="forgetlab-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page's check did not run; Chromium printed: {done.stdout[-1000:]} {done.stderr[-1000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def test_the_check_catches_a_broken_image_and_an_empty_section(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><h2>Figures</h2><figure><img alt='x' src='data:image/png;base64,AAAA'>"
                    "</figure><h2>Empty</h2><h2>Text</h2><p>fine</p></body></html>")
    verdict = render(page, tmp_path)
    assert verdict["images"] == 1 and verdict["sections"] == 3
    assert verdict["problems"] == ["image 0 (x) did not load", "section 'Empty' is empty"]


def test_the_anatomy_report_renders(tmp_path):
    from forgetlab.experiments import reproduce_anatomy

    out = reproduce_anatomy("tiny", store=tmp_path / "store", only="freeze,cka", progress=False,
                            report_dir=tmp_path / "report")
    verdict = render(Path(out.report), tmp_path)
    assert verdict["problems"] == [] and verdict["images"] >= 2 and verdict["sections"] >= 3


def test_the_runs_report_renders(tmp_path, capsys):
    store = tmp_path / "store"
    for method in ("naive", "ewc"):
        assert main(["run", "--store", str(store), "--method", method, "--set", "stream.train_per_task=100",
                     "--set", "train.steps=5", "--quiet", "--no-figures"]) == 0
    page = build_report(store, tmp_path / "report")
    verdict = render(Path(page), tmp_path)
    assert verdict["problems"] == [] and verdict["images"] >= 1


def test_the_diagnose_report_renders(tmp_path):
    from forgetlab.user import diagnose, user_data, wrap_model, write_report

    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    new = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.randn(60, 8)
    data = user_data(x, torch.randint(0, 3, (60,)), "synthetic")
    result = diagnose(wrap_model(old), wrap_model(new), data, k=2, max_samples=60)
    page = write_report(result, tmp_path / "diag")
    verdict = render(Path(page), tmp_path)
    assert verdict["problems"] == [] and verdict["images"] >= 1

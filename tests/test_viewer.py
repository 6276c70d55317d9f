"""The detection viewer (pipeline/core/viewer.py) in a real headless Chromium: click a detection, the video seeks
there; the score threshold hides what is below it; no request leaves the machine."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.demo_data import write_video
from pipeline.core.viewer import relative_src, viewer_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium():
    if CHROMIUM is None:
        if os.environ.get("VIDLOC_CI") == "1":  # CI installs it: there the test cannot pass by skipping
            pytest.fail("VIDLOC_CI=1 (.ci/run) but no chromium on PATH (apt-get install chromium)")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    return CHROMIUM


def page_with_videos(tmp_path):
    """Two real H.264 videos of 4 s beside a page in a sub-folder (the paths are relative), one .mkv-named
    file that is no video, and detections of two classes."""
    media = tmp_path / "videos"
    frames = [np.full((64, 96, 3), (i * 3) % 255, np.uint8) for i in range(100)]
    for name in ("a", "b"):
        write_video(media / f"{name} clip.mp4", frames, 25)
    (media / "broken.mkv").write_bytes(b"not a video")
    out = tmp_path / "report"
    out.mkdir()
    videos = [{"name": n, "src": relative_src(media / f, out), "duration": 4.0, "gt": [["Jump", 1.0, 2.0]]}
              for n, f in (("a", "a clip.mp4"), ("b", "b clip.mp4"), ("broken", "broken.mkv"))]
    runs = {"d2net": {"a": [{"label": "Jump", "score": 0.9, "segment": [1.2, 2.1]},
                            {"label": "Run", "score": 0.3, "segment": [2.5, 3.5]}],
                      "b": [{"label": "Run", "score": 0.6, "segment": [0.4, 1.0]}],
                      "broken": [{"label": "Jump", "score": 0.7, "segment": [1.0, 1.5]}]},
            "ce_only": {"a": [{"label": "Jump", "score": 0.5, "segment": [0.0, 1.0]}]}}
    path = out / "viewer.html"
    path.write_text(viewer_html("test", ["Jump", "Run"], videos, runs))
    return path


# Steps in order, each waiting (polling) for the browser before the next: a click on the detection that
# starts at 1.2 s, then the threshold, then the other run; the unplayable file's message is read first.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = {}, video = document.querySelectorAll("video")[0], broken = document.querySelectorAll("video")[2];
  broken.preload = "auto";
  broken.load();
  [...document.querySelectorAll(".video")[0].querySelectorAll(".span.det")].find(s => s.dataset.start === "1.2").click();
  let tries = 0;
  const poll = setInterval(() => {
    const cannot = [...document.querySelectorAll(".cannot")].filter(c => !c.hidden).map(c => c.textContent);
    if ((video.readyState < 1 || video.seeking || !cannot.length) && ++tries < 400) return;
    clearInterval(poll);
    out.seeked = video.currentTime;
    out.cannot = cannot;
    const thr = document.getElementById("threshold");
    thr.value = "0.5";
    thr.dispatchEvent(new Event("input"));
    const dets = [...document.querySelectorAll(".span.det")];
    out.visible = dets.filter(s => !s.classList.contains("hidden")).map(s => +s.dataset.score).sort();
    out.hiddenBelow = dets.filter(s => s.classList.contains("hidden")).every(s => +s.dataset.score < 0.5);
    const run = document.getElementById("run");
    run.value = "ce_only";
    run.dispatchEvent(new Event("change"));
    out.otherRun = document.querySelectorAll(".span.det").length;
    document.title = "PROBE " + JSON.stringify(out);
  }, 50);
});
</script></body>"""


def run_chromium(page, tmp_path, *extra):
    profile = tmp_path / "profile"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--allow-file-access-from-files",
           "--autoplay-policy=no-user-gesture-required", *extra, "--virtual-time-budget=30000", "--dump-dom",
           page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_a_click_seeks_the_threshold_hides_and_an_unplayable_file_says_so(tmp_path):
    page = page_with_videos(tmp_path)
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))
    r = run_chromium(probe, tmp_path)
    title = r.stdout.split("<title>PROBE ", 1)[1].split("</title>", 1)[0] if "<title>PROBE " in r.stdout else None
    assert title, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(title.replace("&quot;", '"').replace("&amp;", "&"))
    assert abs(out["seeked"] - 1.2) < 0.1  # the clicked detection's start
    assert out["visible"] == [0.6, 0.7, 0.9] and out["hiddenBelow"]  # 0.3 hidden by the 0.5 threshold
    assert out["otherRun"] == 1  # the run selector shows the other experiment's detections
    assert len(out["cannot"]) == 1 and "broken.mkv" in out["cannot"][0] and "cannot play" in out["cannot"][0]


def test_the_page_makes_no_request_off_the_machine(tmp_path):
    """Everything the page loads, as the browser's own resource timing lists it (the videos once played
    included), is a local file: no script, style, font or data from a network (the browser's own
    background traffic is not the page's)."""
    page = page_with_videos(tmp_path)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    probe = page.with_name("probe.html")
    probe.write_text(text.replace("</body>", """<script>
window.addEventListener("load", () => {
  for (const v of document.querySelectorAll("video")) { v.preload = "auto"; v.load(); }
  let tries = 0;
  const poll = setInterval(() => {
    if ([...document.querySelectorAll("video")].filter(v => v.readyState >= 1).length < 2 && ++tries < 400) return;
    clearInterval(poll);
    const used = performance.getEntriesByType("resource").map(e => e.name)
      .concat([...document.querySelectorAll("[src],[href]")].map(e => e.src || e.href), location.href);
    document.title = "USED " + JSON.stringify(used);
  }, 50);
});
</script></body>"""))
    r = run_chromium(probe, tmp_path)
    assert "<title>USED " in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    used = json.loads(r.stdout.split("<title>USED ", 1)[1].split("</title>", 1)[0].replace("&quot;", '"'))
    assert len(used) >= 4 and all(u.startswith("file:///") for u in used), used

"""How fast the detection viewer opens: 200 videos and 1,000 detections, in headless Chromium.

    python bench/viewer.py [--videos 200 --detections 1000]
    python bench/viewer.py --screenshot results/demo/report/viewer.html --out docs/viewer.png

Builds report/viewer.html's page (pipeline/core/viewer.py) for that many videos (one real clip as every
source) and detections, opens it in Debian's chromium and prints the time from navigation start to the
end of the page's own rendering (performance.now(), read by the page), beside the same browser opening
an empty page in the same run. The target is under 2 s. With ``--screenshot`` it instead takes a
picture of a real run's viewer (the README's picture), the first videos seeked to their first detection.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pipeline.demo_data import write_video  # noqa: E402
from pipeline.core.viewer import viewer_html  # noqa: E402

STAMP = ('<script>window.addEventListener("load",()=>{document.title="MS "+performance.now().toFixed(0)+" "'
         '+document.querySelectorAll(".span").length;});</script></body>')


def open_ms(chromium: str, page: Path, profile: Path) -> tuple[float, str]:
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    title = r.stdout.split("<title>MS ", 1)[1].split("</title>", 1)[0]
    ms, spans = title.split()
    return float(ms), spans


SHOW = """<script>window.addEventListener("load", () => {
  for (const block of [...document.querySelectorAll(".video")].slice(0, 3)) {
    const s = block.querySelector(".span.det") || block.querySelector(".span.gt");
    if (s) s.click();
  }
});</script></body>"""


def screenshot(chromium: str, page: Path, out: Path) -> None:
    shown = page.resolve().with_name(".screenshot.html")
    shown.write_text(page.read_text().replace("</body>", SHOW))
    try:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                            "--hide-scrollbars", "--window-size=1000,1100", "--virtual-time-budget=8000",
                            f"--screenshot={out.resolve()}", shown.as_uri()], capture_output=True, timeout=120,
                           check=True)
    finally:
        shown.unlink()
    print(f"screenshot of {page}: {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--detections", type=int, default=1000)
    ap.add_argument("--screenshot", type=Path, help="a viewer.html of a real run to take a picture of")
    ap.add_argument("--out", type=Path, default=Path("docs/viewer.png"))
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    if args.screenshot:
        screenshot(chromium, args.screenshot, args.out)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="viewer-bench-"))
    write_video(tmp / "clip.mp4", [np.full((64, 96, 3), i, np.uint8) for i in range(50)], 25)
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(20)]
    names = [f"video_{i:04d}" for i in range(args.videos)]
    videos = [{"name": n, "src": "clip.mp4", "duration": 180.0,
               "gt": [[classes[int(rng.integers(20))], float(a), float(a + 5)] for a in rng.uniform(0, 170, 5)]}
              for n in names]
    dets: dict[str, list] = {}
    for _ in range(args.detections):
        a = float(rng.uniform(0, 170))
        dets.setdefault(names[int(rng.integers(len(names)))], []).append(
            {"label": classes[int(rng.integers(20))], "score": float(rng.uniform()), "segment": [a, a + 4]})
    page = tmp / "viewer.html"
    page.write_text(viewer_html("bench", classes, videos, {"run": dets}).replace("</body>", STAMP))
    empty = tmp / "empty.html"
    empty.write_text("<html><head><title>x</title></head><body>" + STAMP)
    base, _ = open_ms(chromium, empty, tmp / "p1")
    ms, spans = open_ms(chromium, page, tmp / "p2")
    print(f"{args.videos} videos, {args.detections} detections ({spans} spans with the ground truth): "
          f"open and render {ms / 1000:.2f} s (an empty page: {base / 1000:.2f} s); target < 2 s")
    print(json.dumps({"viewer_s": ms / 1000, "empty_s": base / 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

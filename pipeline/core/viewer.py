"""A page to look at detections: click a detection, see the action.

One self-contained HTML file (its data inline, no request leaves the machine; it opens from file://):
each video plays in the page (an HTML5 <video> of the source file by a path relative to the page), with
a timeline under it of the ground truth (when there is one) and the detections as spans coloured by
class, their scores in the tooltip. Clicking a span seeks the video to its start; the playhead moves
along the timeline while it plays; a class filter and a score threshold hide spans; a run selector
switches between experiments. Where the browser cannot play a file's container or codec, the video says
so and its timeline stays. Videos load only when played or clicked (preload none), so 200 videos and
thousands of detections open at once.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
#controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:2}
#controls label{margin-right:12px;white-space:nowrap}
.video{margin:18px 0;max-width:960px}
.video h3{font-size:15px;margin:4px 0}
video{width:400px;max-width:100%;background:#000;display:block}
.cannot{color:#a00;margin:4px 0}
.timeline{position:relative;height:44px;background:#f4f4f4;margin-top:4px;cursor:pointer}
.row{position:absolute;left:0;right:0;height:18px}
.row.gt{top:2px}.row.det{top:24px}
.span{position:absolute;height:100%;opacity:.85;border-radius:2px;min-width:2px}
.span.gt{opacity:.45}
.span.hidden{display:none}
.playhead{position:absolute;top:0;bottom:0;width:2px;background:#d00;left:0;pointer-events:none}
.legend span{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px}
.rowname{font-size:11px;color:#666}
</style></head><body>
<h1>__TITLE__</h1>
<p>__NOTE__</p>
<div id="controls">
<label>run <select id="run"></select></label>
<label>score &ge; <input id="threshold" type="range" min="0" max="1" step="0.01" value="0">
<output id="thresholdValue">0.00</output></label>
<span id="classes"></span>
<span id="count"></span>
</div>
<div id="videos"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const colour = i => `hsl(${(i * 137.5) % 360},65%,45%)`;
const classIndex = Object.fromEntries(D.classes.map((c, i) => [c, i]));
const shown = new Set(D.classes);
const runSel = document.getElementById("run");
for (const r of Object.keys(D.runs)) runSel.add(new Option(r, r));
const classBox = document.getElementById("classes");
classBox.innerHTML = D.classes.map((c, i) =>
  `<label><input type="checkbox" class="cls" value="${i}" checked><span style="display:inline-block;width:10px;` +
  `height:10px;background:${colour(i)}"></span> ${escapeHtml(c)}</label>`).join("");
function escapeHtml(s) { return String(s).replace(/[&<>"']/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;", "'": "&#39;"}[ch])); }
function pct(t, dur) { return Math.max(0, Math.min(100, 100 * t / dur)); }
function spanHtml(kind, label, start, end, dur, score) {
  const i = classIndex[label] ?? 0;
  const tip = `${label} ${start.toFixed(1)}-${end.toFixed(1)} s` + (score === null ? " (ground truth)" :
    ` score ${score.toFixed(3)}`);
  return `<div class="span ${kind}" data-start="${start}" data-class="${i}" data-score="${score ?? ""}" ` +
    `style="left:${pct(start, dur)}%;width:${pct(end, dur) - pct(start, dur)}%;background:${colour(i)}" ` +
    `title="${escapeHtml(tip)}"></div>`;
}
function render() {
  const run = D.runs[runSel.value] || {};
  document.getElementById("videos").innerHTML = D.videos.map((v, k) => {
    const dets = run[v.name] || [];
    const gt = v.gt.map(g => spanHtml("gt", g[0], g[1], g[2], v.duration, null)).join("");
    const det = dets.map(d => spanHtml("det", d.label, d.segment[0], d.segment[1], v.duration, d.score)).join("");
    return `<div class="video" data-k="${k}"><h3>${escapeHtml(v.name)}</h3>` +
      (v.src ? `<video controls preload="none" src="${escapeHtml(v.src)}"></video><div class="cannot" hidden></div>`
             : `<div class="cannot">no source file for this video</div>`) +
      `<div class="timeline"><div class="row gt">${gt}</div><div class="row det">${det}</div>` +
      `<div class="playhead"></div></div>` +
      `<div class="rowname">top: ground truth${v.gt.length ? "" : " (none)"}; bottom: ${dets.length} detection(s)` +
      `, ${v.duration.toFixed(1)} s</div></div>`;
  }).join("");
  for (const block of document.querySelectorAll(".video")) {
    const v = D.videos[+block.dataset.k], video = block.querySelector("video");
    const head = block.querySelector(".playhead");
    if (video) {
      const move = () => { head.style.left = pct(video.currentTime, v.duration) + "%"; };
      video.addEventListener("timeupdate", move);
      video.addEventListener("seeked", move);
      video.addEventListener("error", () => {
        const m = block.querySelector(".cannot");
        m.hidden = false;
        m.textContent = `This browser cannot play ${v.src} (its container or codec, or the file is not there); ` +
          "the timeline below still shows the video's spans.";
      });
    }
    block.querySelector(".timeline").addEventListener("click", e => {
      const s = e.target.closest(".span");
      if (!video) return;
      const t = s ? +s.dataset.start : v.duration * (e.offsetX / e.currentTarget.clientWidth);
      seek(video, t);
    });
  }
  apply();
}
function seek(video, t) {
  if (video.readyState >= 1) { video.currentTime = t; return; }
  video.preload = "auto";
  video.addEventListener("loadedmetadata", () => { video.currentTime = t; }, {once: true});
  video.load();
}
function apply() {
  const thr = +document.getElementById("threshold").value;
  document.getElementById("thresholdValue").textContent = thr.toFixed(2);
  let n = 0;
  for (const s of document.querySelectorAll(".span")) {
    const hide = !shown.has(D.classes[+s.dataset.class]) || (s.dataset.score !== "" && +s.dataset.score < thr);
    s.classList.toggle("hidden", hide);
    if (!hide && s.classList.contains("det")) n++;
  }
  document.getElementById("count").textContent = `${n} detection(s) shown`;
}
runSel.addEventListener("change", render);
document.getElementById("threshold").addEventListener("input", apply);
classBox.addEventListener("change", e => {
  const c = D.classes[+e.target.value];
  if (e.target.checked) shown.add(c); else shown.delete(c);
  apply();
});
render();
</script></body></html>
"""


def viewer_html(title: str, classes: list[str], videos: list[dict], runs: dict[str, dict[str, list[dict]]],
                note: str = "") -> str:
    """The page. ``videos``: [{"name", "src" (URL relative to the page, or ""), "duration" (s), "gt":
    [[label, start_s, end_s], ...]}]; ``runs``: run name -> {video: detections in the ActivityNet results
    format}."""
    data = json.dumps({"classes": list(classes), "videos": videos, "runs": runs}, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # the JSON cannot close its script element
    return (PAGE.replace("__TITLE__", html.escape(title)).replace("__NOTE__", html.escape(note))
            .replace("__DATA__", data))


def relative_src(source: str | os.PathLike, page_dir: str | os.PathLike) -> str:
    """The source file as a URL path relative to the page's folder (the page opens from file://)."""
    from urllib.parse import quote

    rel = os.path.relpath(os.path.abspath(source), os.path.abspath(page_dir))
    return quote(Path(rel).as_posix())

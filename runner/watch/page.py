"""The watch page: server-rendered HTML (every value escaped), a stylesheet, and a small script that
long-polls /state.json and swaps in the new <main> when the render changes. No framework, no
network access beyond this server, so it works offline."""
from __future__ import annotations

import time
from html import escape
from urllib.parse import quote

from sdbake.runner.watch.session import Snapshot

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; } h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
.state { color: #555; } .state b { color: #222; }
.error { background: #fde8e8; border: 1px solid #e0a0a0; padding: .6em .9em; }
.error pre { white-space: pre-wrap; margin: .3em 0 0; font-size: 13px; }
table { border-collapse: collapse; background: #fff; }
td, th { border: 1px solid #ddd; padding: .25em .7em; text-align: left; }
td.ran { color: #0a6b2b; font-weight: 600; } td.HIT { color: #555; } td.waiting { color: #a05a00; }
.images, .previews { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: .4em; }
figure img { display: block; max-width: 512px; min-width: 128px; image-rendering: pixelated; }
figcaption { font-size: 12px; color: #555; max-width: 512px; overflow-wrap: anywhere; }
"""

SCRIPT = """
"use strict";
(function () {
  var version = Number(document.body.dataset.version);
  function markImages() {
    var images = Array.prototype.slice.call(document.querySelectorAll("main img"));
    var done = function () {
      var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
      document.body.dataset.imagesLoaded = ok === images.length ? "all" : ok + "/" + images.length;
    };
    images.forEach(function (i) { i.addEventListener("load", done); i.addEventListener("error", done); });
    done();
  }
  function poll() {
    // A long poll: the server answers as soon as the render changes (or after 25 s unchanged).
    fetch("/state.json?after=" + version + "&wait=25", {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (state.version === version) { return setTimeout(poll, 1000); }
        return fetch("/main", {cache: "no-store"}).then(function (r) { return r.text(); }).then(function (html) {
          version = state.version;
          document.body.dataset.version = String(version);
          document.querySelector("main").innerHTML = html;
          markImages();
          setTimeout(poll, 1000);
        });
      })
      .catch(function () { document.body.dataset.connection = "lost"; setTimeout(poll, 1000); });
  }
  markImages();
  poll();
})();
"""


def page(snapshot: Snapshot) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>sdbake watch: {escape(snapshot.recipe)}</title>'
            f'<link rel="stylesheet" href="/app.css"></head>\n'
            f'<body data-version="{snapshot.version}" data-images-loaded="">'
            f'<main>{main(snapshot)}</main><script src="/app.js"></script></body></html>\n')


def main(snapshot: Snapshot) -> str:
    parts = [f"<h1>sdbake watch: {escape(snapshot.recipe)}</h1>", _state_line(snapshot)]
    if snapshot.error:
        parts.append('<section class="error" id="error"><b>error in the last attempt</b> (the last good render '
                     f'stays below)<pre>{escape(snapshot.error)}</pre></section>')
    if snapshot.stages:
        rows = "".join(f'<tr><td>{escape(row.id)}</td><td>{escape(row.type)}</td>'
                       f'<td class="{escape(row.status)}">{escape(row.status)}</td>'
                       f'<td>{row.seconds:.2f} s</td><td><code>{escape(row.key)}</code></td></tr>'
                       for row in snapshot.stages)
        parts.append('<h2>Stages</h2><table id="stages"><tr><th>stage</th><th>type</th><th>cache</th>'
                     f'<th>time</th><th>key</th></tr>{rows}</table>')
    if snapshot.images:
        figures = "".join(f'<figure><img src="/files/{quote(path)}?v={mtime}" alt="{escape(path)}">'
                          f'<figcaption>{escape(stage)}: {escape(path)}</figcaption></figure>'
                          for stage, path, mtime in snapshot.images)
        parts.append(f'<h2>Images</h2><div class="images" id="images">{figures}</div>')
    if snapshot.previews:
        figures = "".join(f'<figure><img src="/preview/{quote(stage)}/{step}/{batch}.png?v={snapshot.version}" '
                          f'alt="{escape(stage)} step {step}"><figcaption>{escape(stage)} step {step}'
                          f'{f" image {batch}" if batch else ""}</figcaption></figure>'
                          for stage, step, batch in snapshot.previews)
        parts.append(f'<h2>Step previews</h2><div class="previews" id="previews">{figures}</div>')
    return "\n".join(parts)


def _state_line(snapshot: Snapshot) -> str:
    words = {"starting": "starting", "rendering": "rendering...", "ok": "up to date", "error": "error"}
    text = f"<b>{words.get(snapshot.state, escape(snapshot.state))}</b> &middot; attempt {snapshot.attempt}"
    if snapshot.rendered_at is not None:
        stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.rendered_at))
        text += f" &middot; last good render at {stamp} in {snapshot.seconds:.1f} s"
    return f'<p class="state" id="state">{text}</p>'

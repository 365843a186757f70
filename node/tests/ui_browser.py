"""Drives headless Chromium through chromedriver's WebDriver API (JSON over HTTP, with
Python's urllib only) for node/tests/ui.rs: a real browser on cairn's /ui page.

  ui_browser.py CHROMEDRIVER_URL PAGE_URL OUT_DIR

Phases, each ended by a line on stdout; between phases it waits for a line on stdin:
  THREE n          the page shows n live sites            (screenshot ui-3-sites.png)
  CATCHUP n        n live sites and a catch-up's progress bar (ui-rebalance.png)
  DEAD id          a site shown dead, the page never reloaded (ui-site-dead.png)
  RENDER ms        a view of 100 sites x 512 shards drawn by the page, in ms
"""
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request

DRIVER, PAGE, OUT = sys.argv[1:4]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(DRIVER + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as answer:
        return json.loads(answer.read())["value"]


def script(session, code, *args):
    return call("POST", "/session/%s/execute/sync" % session, {"script": code, "args": list(args)})


def wait(session, code, what, limit=90):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = script(session, code)
        if value:
            return value
        time.sleep(0.25)
    shot(session, "ui-timeout.png")
    sys.exit("the page did not show %s within %d s" % (what, limit))


def shot(session, name):
    png = base64.b64decode(call("GET", "/session/%s/screenshot" % session))
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(png)


def main():
    profile = tempfile.mkdtemp(prefix="cairn-ui-")
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--ignore-certificate-errors", "--window-size=1400,1100", "--user-data-dir=" + profile]
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "acceptInsecureCerts": True,
                                              "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}}
    session = call("POST", "/session", caps)["sessionId"]
    try:
        call("POST", "/session/%s/url" % session, {"url": PAGE})
        source = call("GET", "/session/%s/source" % session)
        for needle in ("http://", "https://", "//cdn"):
            if needle in source:
                sys.exit("the page names %r" % needle)
        loaded = script(session, "window.__loaded = window.__loaded || Math.random(); return window.__loaded;")
        live = wait(session, "var n = document.querySelectorAll('.site.live').length; return n >= 3 ? n : 0;", "3 live sites")
        shot(session, "ui-3-sites.png")
        print("THREE %d" % live, flush=True)
        sys.stdin.readline()
        live = wait(session, "var n = document.querySelectorAll('.site.live').length;"
                             "return (n >= 4 && document.querySelector('.catchup .bar')) ? n : 0;",
                    "4 live sites and a catch-up in progress")
        shot(session, "ui-rebalance.png")
        print("CATCHUP %d" % live, flush=True)
        sys.stdin.readline()
        dead = wait(session, "var d = document.querySelector('.site.dead'); return d ? d.dataset.site : '';", "a dead site")
        if script(session, "return window.__loaded;") != loaded:
            sys.exit("the page was reloaded")
        shot(session, "ui-site-dead.png")
        print("DEAD %s" % dead, flush=True)
        ms = script(session, """
            const sites = [], dbs = [];
            for (let i = 0; i < 100; i++) sites.push({site_id: Array.from({length: 32}, () => '0123456789abcdef'[Math.floor(Math.random() * 16)]).join(''), addr: '10.0.0.' + i + ':7001',
              role: 'core', state: i % 37 ? 'live' : 'dead', generation: 1, version: 'x', zone: 'z' + (i % 3), capacity: 100,
              draining: false, started_ms: 0, last_seen_ms: 0, replicas: 15, bytes: 1e9, following: 0});
            const placement = [];
            for (let s = 0; s < 512; s++) placement.push({shard: s, replicas: [0, 1, 2].map((k) => ({
              site_id: sites[(s * 3 + k) % 100].site_id, state: k ? 'ready' : (s % 50 ? 'ready' : 'catching_up'),
              to: null, entries: 1000, bytes: 1e6, frontier: [], progress: null})), followers: []});
            dbs.push({name: 'big', settings: {shards: 512, replication: 3, retention: {max_age_ms: null, max_bytes: null}},
              created: {wall_ms: 0, logical: 0}, origin: sites[0].site_id, changed: {wall_ms: 0, logical: 0}, placement});
            window.cairnPaused = true;
            return window.cairnRender({site: sites[0].site_id, sites, dbs, dropped: [], plans: [], warnings: []});
        """)
        shot(session, "ui-100-sites-512-shards.png")
        print("RENDER %.1f" % ms, flush=True)
    finally:
        call("DELETE", "/session/%s" % session)


main()

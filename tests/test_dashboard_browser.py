"""The live dashboard in headless Chromium: it renders every chart from the running service, with no
console errors and no request leaving 127.0.0.1 (plotly.js is served by the service itself)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread, fake_policy

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install "
                                "chromium`; .ci/run installs it): the dashboard is not rendered in a browser")


class DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self._ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.fixture
def browser() -> Iterator[DevTools]:
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1400,1800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
            elif not line and proc.poll() is not None:
                break
        assert port is not None, "chromium did not open its DevTools port"
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page = next(p for p in pages if p["type"] == "page")
        from websockets.sync.client import connect

        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args", []))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(("http://127.0.0.1", "data:", "about:")):
                out.append(f"request outside the service: {url}")
    return out


def test_dashboard_renders_its_charts(fake: FakeVendorServer, tmp_path: Path, browser: DevTools) -> None:
    policy = tmp_path / "policy.yaml"
    # timeout_s 30: the first call to a vendor imports its SDK inside the attempt's timeout (seconds on a
    # loaded machine), and the first request here falls back to claude
    policy.write_text(fake_policy(fake, log=str(tmp_path / "decisions.db")).replace("timeout_s: 5", "timeout_s: 30"))
    fake.script("openai", "server_error")  # one fallback, so the error chart has data too
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as server:
        for i in range(5):
            r = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                           json={"model": "auto", "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert r.status_code == 200
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=server.url + "/dashboard")
        deadline = time.monotonic() + 60
        rendered = 0
        while time.monotonic() < deadline:
            rendered = browser.evaluate("document.querySelectorAll('[data-chart][data-rendered=\"1\"]').length") or 0
            report = browser.evaluate("document.querySelectorAll('[data-report][data-rendered=\"1\"]').length") or 0
            if rendered == 6 and report >= 5:
                break
            time.sleep(0.1)
        assert rendered == 6
        # engine report's charts over the decision log: requests, cost, route and query-type shares, latency...
        assert report >= 5, browser.evaluate("document.getElementById('report').innerText")
        assert browser.evaluate("document.querySelectorAll('[data-chart] svg.main-svg').length") >= 6
        assert browser.evaluate("typeof Plotly") == "object"
        tiles = browser.evaluate("document.getElementById('tiles').innerText")
        assert "5" in tiles and "requests" in tiles
        providers = browser.evaluate("document.querySelector('#providers tbody').innerText")
        assert "openai" in providers and "anthropic" in providers
        served = json.loads(browser.evaluate(
            "JSON.stringify((t => Object.fromEntries(t.x.map((x, i) => [x, t.y[i]])))"
            "(document.getElementById('chart-models').data[0]))"))
        assert served == {"claude": 1, "gpt-mini": 4}  # the first request fell back to claude
        failed = json.loads(browser.evaluate(
            "JSON.stringify((t => Object.fromEntries(t.x.map((x, i) => [x, t.y[i]])))"
            "(document.getElementById('chart-models').data[1]))"))
        assert failed == {"claude": 0, "gpt-mini": 1}
        shot = browser.send("Page.captureScreenshot", format="png")["data"]
        assert len(shot) > 1000
        browser.send("Runtime.evaluate", expression="0")  # drain pending events
    assert _problems(browser.events) == []

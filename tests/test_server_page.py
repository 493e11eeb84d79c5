"""The page at `GET /` in a real headless Chromium (Debian's, driven by playwright): it streams the
text as it is written, its seed and temperature controls work, it shows the model's facts, and it
fetches nothing from anywhere but the server.

Without chromium or playwright the test skips, unless CHARSTREAM_REQUIRE_BROWSER=1 (CI sets it):
then it fails."""
import os
import shutil

import pytest

pytest.importorskip("uvicorn", reason="the server extra is not installed: pip install '.[serve]'")

from charstream.server.app import create_app  # noqa: E402
from serving import TIMEOUT, running, train_small, wait_until  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright; never `playwright install`)"
    if missing is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing = f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CHARSTREAM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CHARSTREAM_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return sync_playwright


def _expected(model, seed, n, temperature, random_seed):
    blocks = model.generate_blocks(seed, temperature, random_seed)
    out = ""
    while len(out) < n:
        out += next(blocks)
    return seed + out[:n]


def test_the_page_streams_generation_with_its_controls_and_facts(tmp_path, shakespeare):
    sync_playwright = _browser_or_skip()
    path = tmp_path / "live.npz"
    model = train_small(path, shakespeare)
    app = create_app(path)
    with running(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=TIMEOUT * 3000)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT * 1000)
            urls = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(base + "/")

            # the model's facts
            page.wait_for_function("document.getElementById('facts').dataset.hiddenSize === '32'")
            facts = page.text_content("#facts")
            for shown in ["V 58", "H 32", "cell rnn-tanh", f"characters trained {model.state.chars_trained:,}",
                          "recent loss"]:
                assert shown in facts, facts
            loss = model.state.smooth_loss / model.state.seq_length / 0.6931471805599453
            assert f"{loss:.3f} bits/char" in facts

            # seed, temperature, length and random seed: the text generate_blocks writes
            page.fill("#seed", "ROMEO:\n")
            page.fill("#temperature", "0.8")
            page.fill("#length", "400")
            page.fill("#random-seed", "3")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
            assert page.text_content("#output") == _expected(model, "ROMEO:\n", 400, 0.8, 3)

            # the slider sets the temperature too
            page.fill("#temperature-range", "1.5")
            assert page.input_value("#temperature") == "1.5"
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
            assert page.text_content("#output") == _expected(model, "ROMEO:\n", 400, 1.5, 3)

            # no length: an endless stream, shown while it is written, until Stop
            page.fill("#length", "")
            page.click("#generate")
            page.wait_for_function("document.getElementById('output').textContent.length > 5000")
            assert page.get_attribute("#status", "data-state") == "writing"
            assert app.state.slots.active == 1
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').dataset.state === 'stopped'")
            wait_until(lambda: app.state.slots.active == 0, "the server to stop generating after Stop")

            # a new model file (as `charstream train` saves it): the next generation uses it, and says so
            newer = train_small(path, shakespeare, hidden_size=24, seed=2)
            page.fill("#length", "200")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
            page.wait_for_function("document.getElementById('facts').dataset.hiddenSize === '24'")
            assert page.text_content("#output") == _expected(newer, "ROMEO:\n", 200, 1.5, 3)

            # a bad value: the server's message on the page
            page.fill("#temperature", "0")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').dataset.state === 'error'")
            assert page.text_content("#output") == "temperature must be above 0, got 0.0"

            assert urls and all(u.startswith(base + "/") for u in urls), [u for u in urls if not u.startswith(base)]
        finally:
            browser.close()

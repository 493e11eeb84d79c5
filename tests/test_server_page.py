"""The page at `GET /` in a real headless Chromium (Debian's, driven by playwright): it streams the
text as it is written, its prompt and temperature controls work, it shows the model's facts and
training curve and keeps them current while the model trains beside it, its live mode writes a
fresh sample from each new checkpoint, and it fetches nothing from anywhere but the server.

Without chromium or playwright the test skips, unless CHARSTREAM_REQUIRE_BROWSER=1 (CI sets it):
then it fails."""
import os
import shutil

import pytest

import charstream
from charstream import cells

from serving import require  # noqa: E402

require("starlette")
require("uvicorn")

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


def _expected(model, prompt, n, temperature, random_seed):
    return prompt + "".join(model.generate(prompt, temperature, random_seed, length=n))


def _launch(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=TIMEOUT * 3000)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    return browser, page


def _done(version=None):
    """A page condition: the last generation is done (and is from this model version)."""
    cond = "document.getElementById('status').dataset.state === 'done'"
    return cond if version is None else cond + f" && document.getElementById('output').dataset.version === '{version}'"


def test_the_page_draws_the_curve_and_its_live_mode_follows_the_checkpoints(tmp_path, shakespeare):
    sync_playwright = _browser_or_skip()
    path = tmp_path / "live.npz"
    charstream.train([[shakespeare[:6000]]], model=path, hidden_size=32, random_seed=0)
    model = charstream.load(path)
    n = len(model.history.points)
    assert n >= 5
    app = create_app(path)
    with running(app) as base, sync_playwright() as p:
        browser, page = _launch(p)
        try:
            page.goto(base + "/")
            page.wait_for_function(f"document.getElementById('curve').dataset.points === '{n}'")
            assert len(page.get_attribute("#curve polyline", "points").split()) == n
            last = model.history.points[-1][1] / 0.6931471805599453
            assert page.get_attribute("#curve", "data-last") == f"{last:.3f}"

            # live: the same request (random seed 0 unless one is given) at once, then from each new checkpoint
            page.fill("#prompt", "ROMEO:\n")
            page.fill("#length", "200")
            page.check("#live")
            assert page.input_value("#random-seed") == "0"
            page.wait_for_function(_done(f"0:{model.state.chars_trained}"))
            assert page.text_content("#output") == _expected(model, "ROMEO:\n", 200, 1.0, 0)

            # the model trains beside the page and saves: facts, curve and sample follow, no reload
            charstream.train([[shakespeare[6000:12000]]], model=path)
            newer = charstream.load(path)
            assert len(newer.history.points) > n
            page.wait_for_function(f"document.getElementById('facts').dataset.charsTrained === "
                                   f"'{newer.state.chars_trained}'")
            page.wait_for_function(f"document.getElementById('curve').dataset.points === '{len(newer.history.points)}'")
            page.wait_for_function(_done(f"1:{newer.state.chars_trained}"))
            assert page.text_content("#output") == _expected(newer, "ROMEO:\n", 200, 1.0, 0)
            assert page.text_content("#output") != _expected(model, "ROMEO:\n", 200, 1.0, 0)

            # live off: a new checkpoint leaves the text alone
            page.uncheck("#live")
            charstream.train([[shakespeare[12000:14000]]], model=path)
            third = charstream.load(path)
            page.wait_for_function(f"document.getElementById('facts').dataset.charsTrained === "
                                   f"'{third.state.chars_trained}'")
            # (a live page starts the new generation in the same task that shows the new facts)
            assert page.get_attribute("#status", "data-state") == "done"
            assert page.get_attribute("#output", "data-version") == f"1:{newer.state.chars_trained}"
            assert page.text_content("#output") == _expected(newer, "ROMEO:\n", 200, 1.0, 0)
        finally:
            browser.close()


def test_the_page_streams_generation_with_its_controls_and_facts(tmp_path, shakespeare):
    sync_playwright = _browser_or_skip()
    path = tmp_path / "live.npz"
    model = train_small(path, shakespeare)
    app = create_app(path)
    with running(app) as base, sync_playwright() as p:
        browser, page = _launch(p)
        try:
            urls = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(base + "/")

            # the model's facts
            page.wait_for_function("document.getElementById('facts').dataset.hiddenSize === '32'")
            facts = page.text_content("#facts")
            for shown in ["V 58", "H 32", "cell rnn", "layers 1", "dtype float64", f"characters trained {model.state.chars_trained:,}",
                          "recent loss"]:
                assert shown in facts, facts
            loss = model.state.smooth_loss / model.state.seq_length / 0.6931471805599453
            assert f"{loss:.3f} bits/char" in facts

            # seed, temperature, length and random seed: the text generate_blocks writes
            page.fill("#prompt", "ROMEO:\n")
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


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("lstm", 2)])
def test_the_page_shows_every_cell_as_it_is(tmp_path, shakespeare, cell, layers):
    sync_playwright = _browser_or_skip()
    path = tmp_path / "cell.npz"
    charstream.train([[shakespeare[:3000]]], model=path, cell=cell, layers=layers, hidden_size=12)
    facts = charstream.facts(charstream.load(path))
    with running(create_app(path)) as base, sync_playwright() as p:
        browser, page = _launch(p)
        try:
            page.goto(base + "/")
            page.wait_for_function(f"document.getElementById('facts').dataset.layers === '{layers}'")
            shown = page.text_content("#facts")
            for part in [f"cell {cell}", f"layers {layers}", f"dtype {cells.DEFAULTS[cell].dtype}", "H 12",
                         f"V {facts['vocab_size']}",
                         f"parameters {facts['parameters']:,}", f"characters trained {facts['chars_trained']:,}"]:
                assert part in shown, shown
            assert page.get_attribute("#curve", "data-points") == str(len(facts["history"])) == "2"
        finally:
            browser.close()

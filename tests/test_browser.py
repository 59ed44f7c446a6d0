"""The attention page in a real browser (headless Chromium via Selenium): it draws, choosing a head
or clicking the model view changes the drawing, hovering shows the model's weights, and the page
logs no error and makes no network request.

Needs Debian's `chromium` and `chromium-driver` (`make viz-deps` installs them as root, `make test`
runs it first) and the `selenium` package (the dev extra). Skipped, saying why, where they are
missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from nanoformer.config import ModelConfig
from nanoformer.models import build_model
from nanoformer.tokenizer import Tokenizer
from nanoformer.viz.attention import extract_attention
from nanoformer.viz.html import write_html

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-default-apps", "--window-size=1300,1100"]


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium not found: install Debian's chromium and chromium-driver "
                    "(`make viz-deps` as root, which `make test` runs)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium look anything up online
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """An attention page of a small random translation model (all three kinds of attention)."""
    tok = Tokenizer.train_char(texts=["나는 학교에 간다. I go to school."])
    sp = tok.special_ids()
    torch.manual_seed(0)
    config = ModelConfig(arch="encoder-decoder", vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_layers=2,
                         d_ff=64, max_positions=32, dropout=0.0, positional="sinusoidal", init_std=0.3,
                         pad_id=sp["pad"], bos_id=sp["bos"], eos_id=sp["eos"])
    model = build_model(config).eval()
    result = extract_attention(model, tok, "나는 학교에 간다", target="I go to school.")
    return write_html(result, tmp_path_factory.mktemp("page")), result


LINES_JS = """return Array.from(document.querySelectorAll('#head-svg line')).map(function (l) {
  return [Number(l.dataset.q), Number(l.dataset.k), l.getAttribute('stroke-opacity'), l.getAttribute('stroke'),
          l.style.display]; });"""


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def requests_sent(driver) -> list[str]:
    """Every URL the browser requested since the performance log was last read."""
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            requests.append(message["params"].get("request", {}).get("url") or message["params"].get("url"))
    return requests


def wait_drawn(driver, before: int) -> int:
    deadline = time.time() + 10
    while time.time() < deadline:
        drawn = int(driver.execute_script("return Number(document.body.dataset.drawn || 0)"))
        if drawn > before:
            return drawn
        time.sleep(0.02)
    raise AssertionError("the page did not redraw")


def expected_lines(weights: torch.Tensor) -> dict[tuple[int, int], float]:
    return {(i, j): float(weights[i, j]) for i in range(weights.shape[0]) for j in range(weights.shape[1])
            if float(weights[i, j]) >= 0.005}


def check_lines(lines, weights: torch.Tensor) -> None:
    shown = {(q, k): float(opacity) for q, k, opacity, _, _ in lines}
    expected = expected_lines(weights)
    assert shown.keys() == expected.keys()
    for key, value in expected.items():
        assert shown[key] == pytest.approx(value, abs=2e-4)


def test_attention_page_in_headless_chromium(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path, result = page
    browser.get("about:blank")
    browser.get_log("performance")  # drop what the browser itself did before our page
    browser.get_log("browser")
    url = path.resolve().as_uri()
    browser.get(url)
    assert browser.execute_script("return document.body.dataset.ready") == "1"
    drawn = int(browser.execute_script("return Number(document.body.dataset.drawn)"))

    # First drawing: encoder self-attention, layer 1, head 1, exactly the model's weights.
    enc = result.get("encoder_self").weights
    first = browser.execute_script(LINES_JS)
    check_lines(first, enc[0, 0])

    # Choosing another head changes the drawing, to that head's weights.
    Select(browser.find_element(By.ID, "head")).select_by_value("2")
    drawn = wait_drawn(browser, drawn)
    second = browser.execute_script(LINES_JS)
    assert second != first
    check_lines(second, enc[0, 2])

    # Cross-attention, layer 2: queries are the target tokens, keys the source tokens.
    Select(browser.find_element(By.ID, "kind")).select_by_visible_text("cross-attention")
    drawn = wait_drawn(browser, drawn)
    Select(browser.find_element(By.ID, "layer")).select_by_value("1")
    drawn = wait_drawn(browser, drawn)
    cross = result.get("cross")
    check_lines(browser.execute_script(LINES_JS), cross.weights[1, 2])

    # Hovering a query token keeps its lines only and prints its weights beside the keys.
    token = browser.find_elements(By.CSS_SELECTOR, "#head-svg text.token.q")[3]
    assert token.text == cross.query_tokens[3]
    ActionChains(browser).move_to_element(token).perform()
    visible = [line for line in browser.execute_script(LINES_JS) if line[4] != "none"]
    assert visible and all(q == 3 for q, *_ in visible)
    values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#head-svg text.value.k")]
    assert len(values) == cross.weights.shape[-1]
    for shown, weight in zip(values, cross.weights[1, 2, 3].tolist()):
        assert float(shown) == pytest.approx(weight, abs=6e-4)  # printed with 3 decimals

    # The model view has every layer × head; clicking one opens it in the head view.
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#model-grid canvas")
    assert len(thumbs) == cross.n_layers * cross.n_heads
    thumbs[0 * cross.n_heads + 1].click()  # layer 1, head 2
    wait_drawn(browser, drawn)
    assert Select(browser.find_element(By.ID, "layer")).first_selected_option.text == "1"
    assert Select(browser.find_element(By.ID, "head")).first_selected_option.text == "2"
    check_lines(browser.execute_script(LINES_JS), cross.weights[0, 1])

    # Hangul reached the page as text, not as escapes or boxes of missing data.
    assert "학" in browser.find_element(By.ID, "summary").text

    # No console errors, no request other than the page itself.
    assert console_errors(browser) == []
    requests = requests_sent(browser)
    assert requests and all(r == url or r.startswith("data:") for r in requests), requests
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

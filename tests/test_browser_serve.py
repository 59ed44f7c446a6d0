"""The playground in a real browser (headless Chromium, as tests/test_browser.py): it lists the
models, translates a sentence, draws the cross-attention of the clicked target token with the
model's weights, streams a generation, logs no error and sends no request off the server's origin."""

from __future__ import annotations

import time

import pytest
import torch
from test_browser import browser, console_errors, requests_sent  # noqa: F401 - browser: the Chromium fixture
from tiny_checkpoints import LiveServer, trained_gpt, trained_translator

from nanoformer.serve import ServeSettings, create_app, load_models
from nanoformer.viz.attention import extract_attention

pytest.importorskip("uvicorn", reason="the serve extra is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("playground")
    models = load_models([str(trained_translator(root / "t")), str(trained_gpt(root / "g"))], ["translator", "gpt"])
    with LiveServer(create_app(models, ServeSettings())) as url:
        yield url, {m.name: m for m in models}


def wait_for(driver, script: str, timeout: float = 20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


VISIBLE_LINES = """return Array.from(document.querySelectorAll('#head-svg line'))
  .filter(function (l) { return l.style.display !== 'none'; })
  .map(function (l) { return [Number(l.dataset.q), Number(l.dataset.k)]; });"""


def test_playground_translates_and_draws_the_clicked_words_attention(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    url, models = server
    browser.get("about:blank")
    browser.get_log("performance")
    browser.get_log("browser")
    browser.get(url + "/")
    wait_for(browser, "return document.body.dataset.ready === '1'")
    tabs = [b.get_attribute("data-model") for b in browser.find_elements(By.CSS_SELECTOR, "#tabs button")]
    assert tabs == ["translator", "gpt"]

    panel = browser.find_element(By.CSS_SELECTOR, '.panel[data-model="translator"]')
    source = panel.find_element(By.CSS_SELECTOR, ".source")
    source.send_keys("ein mann geht")
    beam = panel.find_element(By.CSS_SELECTOR, ".beam-size")
    beam.clear()
    beam.send_keys("1")
    panel.find_element(By.CSS_SELECTOR, ".run").click()
    wait_for(browser, "return document.querySelector('.panel[data-model=\"translator\"]').dataset.translated === '1'")
    translation = panel.find_element(By.CSS_SELECTOR, ".translation").text
    assert translation == "a man walks"

    translator = models["translator"]
    cross = extract_attention(translator.model, translator.tokenizer, "ein mann geht", target=translation).get("cross")
    buttons = panel.find_elements(By.CSS_SELECTOR, ".target-tokens button")
    assert [b.text for b in buttons] == cross.query_tokens
    chosen = 2
    buttons[chosen].click()
    assert panel.get_attribute("data-focused") == str(chosen)

    browser.switch_to.frame(panel.find_element(By.CSS_SELECTOR, ".attention-frame"))
    try:
        visible = browser.execute_script(VISIBLE_LINES)
        assert visible and {q for q, _ in visible} == {chosen}
        values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#head-svg text.value.k")]
        expected = cross.weights[-1].mean(0)[chosen]
        assert len(values) == len(cross.key_tokens)
        for shown, weight in zip(values, expected.tolist()):
            assert float(shown) == pytest.approx(weight, abs=6e-4)
        assert browser.find_element(By.ID, "head").get_attribute("value") == "mean"
    finally:
        browser.switch_to.default_content()

    # The generator's tab streams its continuation into the page: greedy, equal to the model's.
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-model="gpt"]').click()
    gpt_panel = browser.find_element(By.CSS_SELECTOR, '.panel[data-model="gpt"]')
    gpt_panel.find_element(By.CSS_SELECTOR, ".prompt").send_keys("The quick")
    temperature = gpt_panel.find_element(By.CSS_SELECTOR, ".temperature")
    temperature.clear()
    temperature.send_keys("0")
    gpt_panel.find_element(By.CSS_SELECTOR, ".run").click()
    wait_for(browser, "return document.querySelector('.panel[data-model=\"gpt\"]').dataset.streaming === '0'")
    gpt = models["gpt"]
    ids = torch.tensor([gpt.tokenizer.encode("The quick")])
    out = gpt.model.generate(ids, max_new_tokens=63)[0, ids.shape[1]:].tolist()  # the page asks 64: capped to the context
    out = out[: out.index(gpt.tokenizer.eos_id)] if gpt.tokenizer.eos_id in out else out
    shown = browser.execute_script("return document.querySelector('.panel[data-model=\"gpt\"] .generated').textContent")
    assert shown == gpt.tokenizer.decode(out) and shown

    assert browser.find_element(By.ID, "error").text == ""
    assert console_errors(browser) == []
    requests = requests_sent(browser)
    assert requests and all(r.startswith(url + "/") or r.startswith(("data:", "about:")) for r in requests), requests

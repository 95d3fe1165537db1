"""`./run.sh web`: a person sees in mitmweb's flow list what the ambassador did to each flow.
Drives the real UI in Debian's headless chromium (installed by .ci/run)."""

import json

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness import FakeUpstream, Reply, echo
from profiles import profile, upstream
from webui import WebAmbassador

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # set explicitly: selenium must never download a driver
SECRET = "web-secret-0b5e-not-for-eyes"


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def upstreams():
    failing = lambda req: Reply.json({"error": "down"}, 503)  # noqa: E731
    with FakeUpstream(echo) as billing, FakeUpstream(failing) as fragile:
        yield billing, fragile


def test_flow_list_shows_the_ambassador_annotations(tmp_path, browser, upstreams):
    billing, fragile = upstreams
    billed = profile(
        upstream(
            "billing", billing.url, path_prefix="/billing", auth={"type": "bearer", "token": SECRET},
            retry={"attempts": 2, "backoff": "1ms"},
        ),
        upstream("fragile", fragile.url, path_prefix="/fragile", breaker={"fail_max": 1, "reset_timeout": "1h"}),
    )
    with WebAmbassador(tmp_path, billed) as amb:
        assert amb.get("/billing/invoices/7")[0] == 200
        assert amb.get("/fragile/report")[0] == 503  # the upstream's failure opens the breaker
        status, _, body = amb.get("/fragile/report")
        assert status == 503 and json.loads(body)["reason"] == "circuit_open"

        browser.get(amb.ui_url)
        # (the harness's readiness probes of /_ambassador/status are flows too)
        rows = WebDriverWait(browser, 30).until(lambda b: client_rows(b) if len(client_rows(b)) == 3 else None)
        browser.save_screenshot(str(tmp_path / "mitmweb.png"))  # for a person looking into a failure
        table = [(row.find_element(By.CSS_SELECTOR, "td.col-path").text, comment_of(row)) for row in rows]

        assert "/billing/invoices/7" in table[0][0]
        assert table[0][1] == "upstream billing · attempts 1 · auth bearer (Authorization: Bearer [redacted])"
        assert table[1][1] == "upstream fragile · breaker open"
        assert "/fragile/report" in table[2][0]
        assert table[2][1] == "upstream fragile · answered by the ambassador: circuit_open · breaker open"
        assert "⛔" in table[2][0]  # the marker: the ambassador answered itself
        assert SECRET not in browser.page_source

        # The flow's detail view: the injected credential, redacted; the whole annotation.
        rows[0].click()
        headers = WebDriverWait(browser, 15).until(lambda b: b.find_element(By.CSS_SELECTOR, ".flow-detail .headers"))
        assert "Authorization: Bearer [redacted]" in headers.text.splitlines()
        browser.find_element(By.XPATH, "//div[contains(@class, 'flow-detail')]//nav//a[text()='Comment']").click()
        WebDriverWait(browser, 15).until(lambda b: table[0][1] in b.find_element(By.CSS_SELECTOR, ".flow-detail").text)
        assert SECRET not in browser.page_source


def client_rows(browser) -> list:
    """The clients' flows (their paths name a route), not the upstream exchanges made for them."""
    rows = browser.find_elements(By.CSS_SELECTOR, ".flow-table tbody tr:has(td.col-comment)")
    return [row for row in rows if any(p in row.find_element(By.CSS_SELECTOR, "td.col-path").text for p in ("/billing/", "/fragile/"))]


def exchange_rows(browser) -> list:
    rows = browser.find_elements(By.CSS_SELECTOR, ".flow-table tbody tr:has(td.col-comment)")
    return [row for row in rows if " · try " in comment_of(row) or " · token fetch" in comment_of(row)]


def test_each_try_is_a_flow_of_its_own_linked_to_the_clients(tmp_path, browser):
    """A retried request: the client's flow and, beside it, each try as it went to the upstream
    (its real URL, the credential redacted, its own answer)."""
    answers = iter([Reply.json({"error": "busy"}, 503), Reply.json({"invoice": 7})])
    with FakeUpstream(lambda req: next(answers)) as billing:
        billed = profile(
            upstream(
                "billing", f"{billing.url}/api", path_prefix="/billing", auth={"type": "bearer", "token": SECRET},
                retry={"attempts": 2, "backoff": "1ms"},
            ),
        )
        with WebAmbassador(tmp_path, billed) as amb:
            assert amb.get("/billing/invoices/7")[0] == 200
            browser.get(amb.ui_url)
            tries = WebDriverWait(browser, 30).until(lambda b: exchange_rows(b) if len(exchange_rows(b)) == 2 else None)
            browser.save_screenshot(str(tmp_path / "mitmweb.png"))
            [client] = client_rows(browser)
            assert "attempts 2" in comment_of(client)
            texts = [(row.find_element(By.CSS_SELECTOR, "td.col-path").text, comment_of(row)) for row in tries]
            assert all("/api/invoices/7" in path for path, _ in texts)  # the upstream's real URL
            assert [c.split(" · ")[1] for _, c in sorted(texts, key=lambda t: t[1])] == ["try 1: 503", "try 2: 200"]
            flows = {f["id"]: f for f in amb.flows()}
            [client_flow] = [f for f in flows.values() if f["request"]["path"] == "/billing/invoices/7"]
            for _, comment in texts:
                assert f"for client flow {client_flow['id']}" in comment
            tries[0].click()
            headers = WebDriverWait(browser, 15).until(lambda b: b.find_element(By.CSS_SELECTOR, ".flow-detail .headers"))
            assert "Authorization: Bearer [redacted]" in headers.text.splitlines()
            assert SECRET not in browser.page_source


def comment_of(row) -> str:
    # The column is narrow and the UI truncates it with CSS; textContent is the whole comment.
    return row.find_element(By.CSS_SELECTOR, "td.col-comment").get_attribute("textContent")


def test_the_markers_filter_the_flow_list_in_the_ui(tmp_path, browser):
    """mitmweb's own search box: `~marker arrow_right` the upstream exchanges, `~marker warning`
    what failed or was degraded, `~marker no_entry` the ambassador's refusals."""
    from selenium.webdriver.common.keys import Keys

    answers = iter([Reply.json({"error": "busy"}, 503), Reply.json({"ok": 1})])
    with FakeUpstream(lambda req: next(answers)) as billing:
        billed = profile(upstream("billing", f"{billing.url}/api", path_prefix="/billing", retry={"attempts": 2, "backoff": "1ms"}))
        with WebAmbassador(tmp_path, billed) as amb:
            assert amb.get("/billing/x")[0] == 200
            assert amb.get("/nothing/here")[0] == 404
            browser.get(amb.ui_url)
            WebDriverWait(browser, 30).until(lambda b: len(listed(b)) == 4)
            search = browser.find_element(By.CSS_SELECTOR, "input[placeholder='Search']")

            def shown_by(flt: str) -> list[str]:
                search.send_keys(Keys.CONTROL, "a")
                search.send_keys(Keys.BACKSPACE)
                search.send_keys(flt)
                return WebDriverWait(browser, 15).until(lambda b: (rows := listed(b)) and len(rows) < 4 and rows)

            assert [r.endswith("/api/x 200") for r in shown_by("~marker arrow_right")] == [True]
            assert sorted(shown_by("~marker warning")) == sorted([f"{billing.url}/api/x 503", f"http://127.0.0.1:{amb.port}/billing/x 200"])
            assert shown_by("~marker no_entry") == [f"http://127.0.0.1:{amb.port}/nothing/here 404"]


def listed(browser) -> list[str]:
    """The flow list's rows as 'URL STATUS'."""
    rows = []
    for row in browser.find_elements(By.CSS_SELECTOR, ".flow-table tbody tr:has(td.col-path)"):
        path = row.find_element(By.CSS_SELECTOR, 'td.col-path').text.strip(' \n⚠⛔➡🔁')
        rows.append(f"{path} {row.find_element(By.CSS_SELECTOR, 'td.col-status').text}")
    return rows

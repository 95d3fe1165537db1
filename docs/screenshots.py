"""Make the README's mitmweb screenshot: `.venv/bin/python docs/screenshots.py`.

The real ambassador under mitmweb (`./run.sh web`) in front of a partner that is busy at the
first try, seen in headless chromium: the client's flow with its comment, and each try as a
flow of its own with the upstream's real URL. Writes docs/images/mitmweb-tries.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from harness import FakeUpstream, Reply  # noqa: E402
from webui import WebAmbassador  # noqa: E402

OUT = ROOT / "docs" / "images" / "mitmweb-tries.png"


def partner():
    busy = {"/api/invoices/7": 1}  # the first try of this one is refused

    def answer(req):
        if busy.get(req.path, 0) > 0:
            busy[req.path] -= 1
            return Reply.json({"error": "busy, try again"}, 503)
        return Reply.json({"path": req.path, "status": "paid"}, headers=[("Cache-Control", "max-age=60")])

    return answer


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream(partner()) as up:
        profile = f"""
upstreams:
  billing:
    url: {up.url}/api
    match: {{path_prefix: /billing}}
    auth: {{type: bearer, token: "not-shown"}}
    retry: {{attempts: 3, backoff: 50ms}}
    cache: {{}}
"""
        with WebAmbassador(Path(tmp), profile) as amb:
            for path in ("/billing/invoices/7", "/billing/invoices/8", "/billing/invoices/8"):
                amb.get(path)
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,760", f"--user-data-dir={tmp}/chromium"):
                options.add_argument(flag)
            browser = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
            try:
                browser.get(amb.ui_url)
                WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".flow-table tbody tr")) >= 6)
                rows = browser.find_elements(By.CSS_SELECTOR, ".flow-table tbody tr")
                next(r for r in rows if "/billing/invoices/7" in r.text).click()
                WebDriverWait(browser, 15).until(lambda b: b.find_element(By.CSS_SELECTOR, ".flow-detail"))
                OUT.parent.mkdir(exist_ok=True)
                browser.save_screenshot(str(OUT))
            finally:
                browser.quit()
    print(OUT)


if __name__ == "__main__":
    main()

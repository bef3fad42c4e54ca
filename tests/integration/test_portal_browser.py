"""The developer portal in a real browser: headless Chromium (Debian's chromium and
chromedriver) driven by selenium, against `fastgate run --workers 2`.

Screenshots of every page go to ``$FASTGATE_ARTIFACTS/portal`` (default ``artifacts/portal``
in the repository, not committed)."""
from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.helpers.gateway import REPO
from tests.helpers.util import wait_for
from tests.integration.cp_helpers import ALICE, TOKEN, VIEWER, admin_port, start
from tests.integration.test_apim import SHOP_KEY, apim_config

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="chromium / chromedriver not installed")
ARTIFACTS = os.path.join(os.environ.get("FASTGATE_ARTIFACTS", os.path.join(REPO, "artifacts")),
                         "portal")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def portal(tmp_path):
    port = admin_port()
    proc = start(tmp_path, apim_config(port))
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


class Shots:
    def __init__(self, driver):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.driver, self.n = driver, 0

    def __call__(self, name):
        self.n += 1
        self.driver.save_screenshot(os.path.join(ARTIFACTS, f"{self.n:02d}-{name}.png"))


def sign_in(driver, base, token):
    from selenium.webdriver.common.by import By
    driver.get(base + "/portal/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    assert wait_for(lambda: driver.find_elements(By.ID, "logout"), timeout=10)


def submit(driver, element, confirm=False):
    """Click a button that submits a form (``confirm``: after a confirm() dialog, accepted)
    and wait for the page it leads to: the click returns before the navigation, and on a
    loaded machine the old page is still there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    if confirm:
        driver.switch_to.alert.accept()
    WebDriverWait(driver, 15).until(EC.staleness_of(old))


def sign_out(driver):
    from selenium.webdriver.common.by import By
    driver.find_element(By.ID, "logout").click()
    assert wait_for(lambda: driver.find_elements(By.ID, "token"), timeout=10)


def test_the_whole_subscription_flow_in_a_browser(portal, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    proc, base = portal
    shot = Shots(browser)
    d = browser

    d.get(base + "/portal/")
    shot("sign-in")
    d.find_element(By.ID, "token").send_keys("wrong-token-0000000000")
    submit(d, d.find_element(By.ID, "sign-in"))
    assert "not valid" in d.find_element(By.CSS_SELECTOR, ".flash").text

    # a viewer finds the API, sees its lifecycle and docs, asks for access
    sign_in(d, base, VIEWER)
    shot("catalog")
    assert not d.find_elements(By.ID, "api-find")          # internal: not listed for viewers
    card = d.find_element(By.ID, "api-pay")
    assert "deprecated" in card.text and "Sunset 2027-06-30T00:00:00Z" in card.text
    assert card.find_element(By.LINK_TEXT, "Docs").get_attribute("href") == \
        "https://docs.example.com/pay"
    search = d.find_element(By.ID, "q")
    search.send_keys("nothing-matches-this")
    assert not card.is_displayed()
    search.clear()
    search.send_keys("payments")
    assert card.is_displayed()
    shot("catalog-search")
    Select(card.find_element(By.NAME, "consumer")).select_by_visible_text("shop")
    submit(d, card.find_element(By.CSS_SELECTOR, "button.subscribe"))
    assert "waiting for the owning team" in d.find_element(By.CSS_SELECTOR, ".flash").text
    row = d.find_element(By.CSS_SELECTOR, "tbody tr")
    sid = row.get_attribute("id")[4:]
    assert "pending" in row.text and not row.find_elements(By.CSS_SELECTOR, "button.approve")
    shot("subscriptions-pending")
    d.get(base + "/portal/audit")
    assert "Only admins" in d.page_source
    sign_out(d)

    # the owning team's operator approves: the key is shown once
    sign_in(d, base, ALICE)
    d.get(base + "/portal/subscriptions")
    # the approval is a config change (validated, prepared, written, recorded): the page
    # that shows the key comes when it is done
    submit(d, d.find_element(By.CSS_SELECTOR, f"#sub-{sid} button.approve"))
    key = d.find_element(By.ID, "api-key").text
    assert key.startswith("fgk_")
    shot("key-shown-once")
    d.get(base + "/portal/subscriptions")
    row = d.find_element(By.ID, f"sub-{sid}")
    assert "approved" in row.text and key not in d.page_source and key[:8] in row.text
    shot("subscriptions-approved")

    # the consumer calls the API through the gateway with it; the call shows in usage
    r = httpx.get(proc.url + "/pay", headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 200 and r.text == "v1"

    def usage_shows_shop():
        d.get(base + "/portal/usage")
        cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#usage-requests td")]
        return "shop" in cells and "pay" in cells
    assert wait_for(usage_shows_shop, timeout=15, interval=0.5)
    assert d.find_elements(By.ID, "usage-chart")
    shot("usage")

    # revoked: the key is refused at once
    d.get(base + "/portal/subscriptions")
    submit(d, d.find_element(By.CSS_SELECTOR, f"#sub-{sid} button.revoke"), confirm=True)
    assert "no longer works" in d.find_element(By.CSS_SELECTOR, ".flash").text
    shot("revoked")
    r = httpx.get(proc.url + "/pay", headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 401
    assert httpx.get(proc.url + "/pay", headers={"X-API-Key": SHOP_KEY}).status_code == 403
    sign_out(d)

    # an admin reads the audit log
    sign_in(d, base, TOKEN)
    d.get(base + "/portal/audit")
    text = d.find_element(By.ID, "audit").text
    assert "subscription.revoke" in text and "subscription.approve" in text
    shot("audit")
    # the strict CSP held on every page: no violation was reported
    logs = [e["message"] for e in d.get_log("browser")]
    assert not [m for m in logs if "Content Security Policy" in m], logs


def test_forms_need_their_csrf_token_and_a_session(portal):
    proc, base = portal
    with httpx.Client(base_url=base) as c:
        page = c.get("/portal/").text
        assert "Sign in" in page
        # a sign-in without the pre-session token bound to its cookie is refused
        c.cookies.clear()
        r = c.post("/portal/login", data={"token": TOKEN, "csrf": "guess"})
        assert r.status_code == 403
        page = c.get("/portal/").text
        pre = page.split('name=csrf value="', 1)[1].split('"', 1)[0]
        r = c.post("/portal/login", data={"token": TOKEN, "csrf": pre})
        assert r.status_code == 303 and "fg_session" in r.headers["set-cookie"]
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        csp = c.get("/portal/").headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        # signed in, but a forged form (no token) changes nothing
        r = c.post("/portal/subscribe", data={"consumer": "shop", "route": "pay"})
        assert r.status_code == 403
        admin = httpx.get(base + "/subscriptions", headers={"Authorization": f"Bearer {TOKEN}"})
        assert admin.json()["subscriptions"] == []
    # no session: every page leads to the sign-in, and a POST body is not even read
    assert httpx.get(base + "/portal/usage").status_code == 303
    r = httpx.post(base + "/portal/subscribe", content=b"x" * 10000)
    assert r.status_code == 413

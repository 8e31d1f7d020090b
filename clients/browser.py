"""Drive the server's browser page (GET / on the HTTP port) in headless Chromium: upload images, read the
labels it shows, save a screenshot. Used by the browser test and by `make demo`.

    python -m clients.browser --url http://127.0.0.1:8000 --screenshot reports/page.png data/photos/*.jpg

Needs selenium (requirements/main.txt) and Debian's `chromium` and `chromium-driver` (`make browser`);
the driver is the installed chromedriver, never a download.
"""
import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

BROWSER = "chromium"
DRIVER = "chromedriver"


def missing() -> Optional[str]:
    """Why the page cannot be driven here (a missing package or program), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements/main.txt)"
    absent = [name for name in (BROWSER, DRIVER) if shutil.which(name) is None]
    if absent:
        return f"{' and '.join(absent)} not found: `make browser` installs Debian's chromium and chromium-driver"
    return None


def open_browser():
    """Headless Chromium through the installed chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(BROWSER)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)


def classify_on_page(driver, url: str, images: Sequence[Path], token: str = "", timeout_s: float = 60.0
                     ) -> List[List[str]]:
    """Open the page, upload `images`, wait for every result; the labels shown per image, best first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    if token:
        driver.find_element(By.ID, "token").send_keys(token)
    wait = WebDriverWait(driver, timeout_s)
    wait.until(lambda d: d.find_element(By.ID, "model-name").text != "?")
    driver.find_element(By.ID, "files").send_keys("\n".join(str(Path(p).resolve()) for p in images))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result[data-done]")) == len(images))
    cards = driver.find_elements(By.CSS_SELECTOR, ".result")[::-1]  # the page shows the newest first
    return [[label.text for label in card.find_elements(By.CSS_SELECTOR, ".label")] for card in cards]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Classify images on the page, print the top-1 of each, save a screenshot."""
    parser = argparse.ArgumentParser(prog="python -m clients.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP port")
    parser.add_argument("--screenshot", type=Path, help="PNG of the page once every image is shown")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    driver = open_browser()
    try:
        shown = classify_on_page(driver, args.url, args.images)
        if args.screenshot:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot))
    finally:
        driver.quit()
    for path, labels in zip(args.images, shown):
        print(f"{path}: {labels[0] if labels else '(error)'}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

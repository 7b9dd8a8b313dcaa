"""The notebooks' widgets where readers meet them: in static renderings (GitHub, nbconvert's HTML) and in a real
browser (JupyterLab 4 in headless Chromium at 1280x800).

The browser test needs Chromium at CALGRPO_CHROMIUM (default /usr/bin/chromium: Debian's ``chromium`` package) and
the ``playwright`` Python client, which drives that executable (playwright's own browser download is never used:
browsers cannot be fetched here). Without them the test is skipped, unless CALGRPO_BROWSER_TESTS=1 (set by
``.ci/run``, which installs Chromium), where it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from calgrpo_lib.widget_boxes import STATIC_CLASS, WIDGET_NOTE

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
VIEW = "application/vnd.jupyter.widget-view+json"
CHROMIUM = os.environ.get("CALGRPO_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _widget_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, list, int]]:
    """(cell index, the cell's outputs, index of the widget output) for every widget output of a notebook."""
    return [(c, cell.outputs, i) for c, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for i, out in enumerate(cell.outputs) if VIEW in out.get("data", {})]


# ------------------------------------------------------------------------------------------- static renderings

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_hold_no_widget_tree_no_progress_bar_and_jupyterlabs_kernelspec(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    for c, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"[HV]Box\(children=", text), f"cell {c}: a raw widget repr: {text[:80]!r}"
            assert not re.search(r"\d+%\|", text) and "it/s]" not in text, f"cell {c}: a progress bar: {text[:80]!r}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if _widget_outputs(nbformat.read(p, as_version=4))],
                         ids=lambda p: p.stem)
def test_each_widget_has_an_image_of_its_start_in_nbconvert_html(path: Path) -> None:
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    widgets = _widget_outputs(nb)
    for c, outputs, i in widgets:
        assert i > 0 and "image/png" in outputs[i - 1].get("data", {}), f"cell {c}: no image before its widget"
        assert "".join(outputs[i]["data"]["text/plain"]) == WIDGET_NOTE
        one = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nb.cells[c]])
        html, _ = HTMLExporter(template_name="lab").from_notebook_node(one)
        images = re.findall(r'<img [^>]*src="data:image/png;base64,', html)
        assert len(images) == 1, f"cell {c}: {len(images)} images in nbconvert's HTML, not 1"
        assert html.count(f'<script type="{VIEW}">') == 1  # and the widget beside it, for a renderer that can draw it
    assert len(widgets) >= 1


# ----------------------------------------------------------------------------------------------- the browser

def _browser_or_skip():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set CALGRPO_CHROMIUM)")
    if missing:
        why = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CALGRPO_BROWSER_TESTS") == "1":
            pytest.fail(why + "; CALGRPO_BROWSER_TESTS=1 requires it")
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free localhost port over a copy of the notebooks (JupyterLab saves what it runs),
    with its own settings: no news or update checks, every cell kept in the page (no windowing)."""
    sync_playwright = _browser_or_skip()
    work = tmp_path_factory.mktemp("lab")
    root, conf = work / "notebooks", work / "jupyter"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    settings = {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                "notebook-extension/tracker": {"windowingMode": "none"}}
    for name, values in settings.items():
        plugin, file = name.split("/")
        (conf / "settings" / "@jupyterlab" / plugin).mkdir(parents=True, exist_ok=True)
        (conf / "settings" / "@jupyterlab" / plugin / f"{file}.jupyterlab-settings").write_text(json.dumps(values))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(conf / "config"), JUPYTER_RUNTIME_DIR=str(conf / "runtime"),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={conf / 'settings'}",
         f"--LabApp.workspaces_dir={conf / 'workspaces'}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited with {server.returncode}: {(work / 'server.log').read_text()}")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser, url, token
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _open_and_run(browser, url: str, token: str, name: str):
    """Open notebook ``name`` in a new 1280x800 page, run all its cells, wait for its widgets; returns (page, page
    errors, console errors, the widget boxes). :func:`_close` ends it."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(180_000)
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset")  # reset: no tab of an earlier page comes back
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel")
    page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }")
    ok = page.evaluate("async () => await window.jupyterapp.commands.execute('notebook:run-all-cells')")
    assert ok, f"{name}: a cell failed in the browser"
    panel = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    boxes = page.locator(f"#{panel} .{STATIC_CLASS}")
    boxes.first.wait_for(state="visible")
    return page, errors, console, boxes


def _close(page) -> None:
    """Shut the page's kernel down and close the page."""
    page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }")
    page.close()


# In the page: every control of a widget box (slider, dropdown, checkbox, with its label and readout) must lie
# whole inside the box, clear of every figure (an image or an HTML panel), with nothing clipped or scrolled sideways
# on the way up to the box, and a click at the centre of its handle, menu or box must reach it.
LAYOUT_PROBLEMS = """box => {
    const shown = e => getComputedStyle(e).display !== 'none' && e.getBoundingClientRect().width > 0;
    const controls = [...box.querySelectorAll('.widget-slider, .widget-dropdown, .widget-checkbox')].filter(shown);
    const figures = [...box.querySelectorAll('.widget-image, .widget-html')].filter(shown);
    const name = e => (e.querySelector('.widget-label') || {}).innerText || e.className.split(' ').slice(-1)[0];
    const overlap = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1
        && b.top < a.bottom - 1;
    const problems = [];
    box.scrollIntoView({block: 'start'});
    const outer = box.getBoundingClientRect();
    for (const c of controls) {
        const r = c.getBoundingClientRect();
        if (r.left < outer.left - 1 || r.right > outer.right + 1) problems.push(`${name(c)} sticks out of the box`);
        for (const f of figures) if (overlap(r, f.getBoundingClientRect())) problems.push(`${name(c)} under a figure`);
        for (let e = c; e && e !== box.parentElement; e = e.parentElement)
            if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
                problems.push(`${name(c)}: ${e.className.split(' ').slice(-1)[0]} clips it sideways`);
        for (const part of c.querySelectorAll('.noUi-handle, select, input')) {
            const p = part.getBoundingClientRect();
            const top = document.elementFromPoint(p.left + p.width / 2, p.top + p.height / 2);
            if (!(top === part || part.contains(top)))
                problems.push(`${name(c)}: a click reaches ${top && top.className}`);
        }
    }
    return [controls.length, [...new Set(problems)]];
}"""


def _layout_problems(box) -> tuple[int, list[str]]:
    """(how many controls the widget box has, what is wrong with their layout: see LAYOUT_PROBLEMS)."""
    return tuple(box.evaluate(LAYOUT_PROBLEMS))


def _static_image_hidden(box) -> bool:
    """Whether the output just before the widget's (its static image) is hidden now that the widget is drawn."""
    return box.evaluate("""el => { const prev = el.closest('.jp-OutputArea-child').previousElementSibling;
        return !!prev && !!prev.querySelector('img') && getComputedStyle(prev).display === 'none'; }""")


def test_widgets_render_react_and_keep_their_controls_uncovered_in_jupyterlab(lab) -> None:
    browser, url, token = lab
    # notebook 01: the advantage widget (sliders, a switch, a dropdown, an eps slider, a readout; the figure beside)
    page, errors, console, boxes = _open_and_run(browser, url, token, "01_group_advantages.ipynb")
    box = boxes.first
    assert _static_image_hidden(box)
    assert _layout_problems(box) == (7, [])  # 5 sliders, the switch, the dropdown
    page.set_viewport_size({"width": 1024, "height": 800})  # the narrowest width the layout is meant for
    page.wait_for_timeout(500)
    assert _layout_problems(box) == (7, [])  # the figure has wrapped below the controls
    page.set_viewport_size({"width": 1280, "height": 800})
    image, readout = box.locator(".widget-image"), box.locator(".widget-html-content").first
    figure = image.bounding_box()
    assert figure["width"] > 300 and figure["height"] > 100  # the figure is drawn, at a readable size
    before, src = readout.inner_text(), image.get_attribute("src")
    assert before == "A = [+1.500, -0.500, -0.500, -0.500]"
    handle = box.locator(".noUi-handle").nth(1)  # r1: drag it right, as a reader would
    handle.scroll_into_view_if_needed()
    at = handle.bounding_box()
    page.mouse.move(at["x"] + at["width"] / 2, at["y"] + at["height"] / 2)
    page.mouse.down()
    page.mouse.move(at["x"] + at["width"] / 2 + 60, at["y"] + at["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_function("([el, text]) => el.innerText !== text", arg=[readout.element_handle(), before])
    page.wait_for_function("([el, src]) => el.getAttribute('src') !== src", arg=[image.element_handle(), src])
    moved = [float(v) for v in re.findall(r"[+-]\d+\.\d+", readout.inner_text())]
    assert len(moved) == 4 and moved[1] > -0.5  # r1 went up, and so did its advantage
    assert errors == [] and console == [], (errors, console)
    _close(page)

    # notebook 03: the credit browser (two dropdowns over a token heat map)
    page, errors, console, boxes = _open_and_run(browser, url, token, "03_span_to_token.ipynb")
    box = boxes.first
    assert _static_image_hidden(box)
    assert _layout_problems(box) == (2, [])  # two dropdowns
    page.set_viewport_size({"width": 1024, "height": 800})
    page.wait_for_timeout(500)
    assert _layout_problems(box) == (2, [])
    heatmap = box.locator(".widget-html-content").first
    first = heatmap.inner_html()
    assert "cal_hybrid" in first and "calgrpo-token" in first
    box.locator("select").nth(1).select_option(label="sequence")
    page.wait_for_function("([el, html]) => el.innerHTML !== html", arg=[heatmap.element_handle(), first])
    assert "sequence" in heatmap.inner_html() and "cal_hybrid" not in heatmap.inner_html()
    assert errors == [] and console == [], (errors, console)
    _close(page)

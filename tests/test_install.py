"""The install is whole: extensions enabled by `pip install` alone, bundles built,
the REST API up behind authentication, and the sidebar visible in a real browser."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import cmbagent_jupyter
from cmbagent_jupyter.widgets import STATIC_DIR

WIDGET_BUNDLES = ["event_log", "dag", "approval", "cost", "run_header"]


def test_server_extension_is_enabled_and_loads(run_jupyter):
    output = run_jupyter("server", "extension", "list")

    assert re.search(r"cmbagent_jupyter\s+enabled", output), output
    assert re.search(r"cmbagent_jupyter\s+\S*\s*OK", output), output


def test_labextension_is_installed_and_enabled(run_jupyter):
    output = run_jupyter("labextension", "list")

    line = next((line for line in output.splitlines() if "cmbagent-jupyter" in line), None)
    assert line is not None, output
    assert "enabled" in line and "OK" in line, output
    assert "disabled" not in line, output


@pytest.mark.parametrize("name", WIDGET_BUNDLES)
def test_widget_bundle_is_an_es_module(name):
    bundle = STATIC_DIR / f"{name}.js"

    source = bundle.read_text()

    assert re.search(r"\bexport\s*\{[^}]*\brender\b", source), f"{bundle} exports no render"
    assert "require(" not in source, f"{bundle} is not self-contained ESM"


async def test_health_endpoint_answers_with_version(jp_fetch):
    response = await jp_fetch("cmbagent", "api", "health")

    assert response.code == 200
    assert json.loads(response.body) == {"status": "ok", "version": cmbagent_jupyter.__version__}


async def test_health_endpoint_refuses_requests_without_token(
    jp_serverapp, http_server_client, jp_base_url
):
    response = await http_server_client.fetch(
        f"{jp_base_url}cmbagent/api/health",
        raise_error=False,
        follow_redirects=False,
    )

    assert response.code in (401, 403, 302), response.code
    assert b'"status": "ok"' not in (response.body or b"")


def open_jupyterlab(browser, server):
    """A page on JupyterLab, once our sidebar panel is in its shell."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{server.url}lab?token={server.token}")
    page.locator("#cmbagent-sidebar").wait_for(state="attached", timeout=90_000)
    # the layout restored: from then on JupyterLab's shortcuts are live
    page.wait_for_function("() => !!window.jupyterapp", timeout=90_000)
    assert page.evaluate("() => window.jupyterapp.restored.then(() => true)")
    return page


@pytest.mark.browser
def test_sidebar_shows_server_health_in_jupyterlab(
    jupyter_lab_server, chromium_browser, artifacts_dir
):
    page = open_jupyterlab(chromium_browser, jupyter_lab_server)

    page.locator('.jp-SideBar li[data-id="cmbagent-sidebar"]').click()

    health = page.locator('#cmbagent-sidebar .cmbagent-sidebar-health[data-state="ok"]')
    health.wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "sidebar.png"))
    assert health.inner_text() == f"Server: ok (cmbagent-jupyter {cmbagent_jupyter.__version__})"


@pytest.mark.browser
def test_command_palette_opens_the_sidebar(jupyter_lab_server, chromium_browser):
    page = open_jupyterlab(chromium_browser, jupyter_lab_server)
    sidebar = page.locator("#cmbagent-sidebar")
    assert not sidebar.is_visible()

    palette = page.locator(".lm-CommandPalette-input")
    for _ in range(3):  # a shortcut pressed while the page is still taking focus can be lost
        page.keyboard.press("Control+Shift+C")
        try:
            palette.wait_for(state="visible", timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    palette.fill("CMBAgent: open sidebar")
    page.locator(".lm-CommandPalette-item", has_text="CMBAgent: open sidebar").click()

    sidebar.wait_for(state="visible", timeout=30_000)
    assert page.evaluate("window.jupyterapp.commands.hasCommand('cmbagent:open-sidebar')")


@pytest.mark.browser
def test_extension_stays_quiet_in_voila(voila_server, chromium_browser, artifacts_dir):
    """Voila loads every installed labextension; ours must neither fail nor call the server."""
    page = chromium_browser.new_page()
    messages, page_errors, requests = [], [], []
    page.on("console", lambda message: messages.append(message))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))

    idle_note = "cmbagent: no JupyterLab shell"
    with page.expect_console_message(lambda message: idle_note in message.text, timeout=90_000):
        page.goto(voila_server.url)
    page.get_by_text("hello from voila").wait_for(timeout=90_000)
    page.screenshot(path=str(artifacts_dir / "voila.png"))

    ours = [m for m in messages if "cmbagent" in m.text]
    assert all(m.type == "debug" for m in ours), [(m.type, m.text) for m in ours]
    assert not [e for e in page_errors if "cmbagent" in e], page_errors
    assert not [url for url in requests if "cmbagent/api" in url], requests

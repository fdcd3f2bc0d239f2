"""The install is whole: extensions enabled by `pip install` alone, bundles built,
the REST API up behind authentication, and the sidebar visible in a real browser."""

from __future__ import annotations

import json
import re

import pytest

import cmbagent_jupyter
from cmbagent_jupyter.widgets import STATIC_DIR

WIDGET_BUNDLES = ["event_log", "dag"]


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


@pytest.mark.browser
def test_sidebar_shows_server_health_in_jupyterlab(
    jupyter_lab_server, chromium_browser, artifacts_dir
):
    page = chromium_browser.new_page(viewport={"width": 1280, "height": 800})
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))

    page.goto(f"{jupyter_lab_server.url}lab?token={jupyter_lab_server.token}")
    page.locator("#cmbagent-sidebar").wait_for(state="attached", timeout=90_000)
    page.locator('.jp-SideBar li[data-id="cmbagent-sidebar"]').click()
    health = page.locator('#cmbagent-sidebar .cmbagent-sidebar-health[data-state="ok"]')
    health.wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "sidebar.png"))

    assert health.inner_text() == f"Server: ok (cmbagent-jupyter {cmbagent_jupyter.__version__})"
    assert page.locator("#cmbagent-sidebar").is_visible(), "\n".join(console)

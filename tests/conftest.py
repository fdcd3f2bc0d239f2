"""The suite's fixtures, imported from tests/fixtures/ (one module per thing they build).

Importing a fixture here makes it visible to every test under tests/, as if it were
defined here: ours override pytest-jupyter's (jp_server_config), and autouse ones apply
to all tests. Helpers that are not fixtures are imported by the test modules themselves,
e.g. `from fixtures.waiting import wait_for`.
"""

from fixtures.browser import artifacts_dir, chromium_browser  # noqa: F401
from fixtures.cli import cli  # noqa: F401
from fixtures.engine import engine_home  # noqa: F401
from fixtures.jupyter import (  # noqa: F401
    jp_server_config,
    jupyter_lab_server,
    run_jupyter,
    voila_dashboard,
    voila_server,
)
from fixtures.server import (  # noqa: F401
    _server_store_home,
    api_call,
    event_socket,
    server_api,
    stream_settings,
    unauthenticated_call,
)
from fixtures.store import api_home, cmb_home, store  # noqa: F401
from fixtures.widgets import wire  # noqa: F401

pytest_plugins = ["pytest_jupyter.jupyter_server"]

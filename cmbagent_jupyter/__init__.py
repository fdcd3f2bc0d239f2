"""cmbagent-jupyter: durable, controllable multi-agent research workflows in Jupyter."""

from __future__ import annotations

from cmbagent_jupyter._version import __version__ as __version__

_API_NAMES = ("open_session", "get_run", "SessionHandle", "RunHandle")


def __getattr__(name: str):
    """The Python API, imported on first use so `import cmbagent_jupyter` stays light."""
    if name in _API_NAMES:
        from cmbagent_jupyter import api

        return getattr(api, name)
    raise AttributeError(f"module 'cmbagent_jupyter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_NAMES])


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "cmbagent-jupyter"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cmbagent_jupyter.server"}]


def load_ipython_extension(ipython):  # pragma: no cover - thin hook
    from cmbagent_jupyter.magics import register

    register(ipython)

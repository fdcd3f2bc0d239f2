"""Dual persistence: each checkpoint goes to a pickle file in the run's directory and
to the store. The files alone are enough to rebuild the store (`cmbagent recover`).

Pickles are read with an allow-list unpickler (plain data, datetimes, numpy and
pandas values) and, for our own files, only from under CMBAGENT_HOME/sessions.
"""

from __future__ import annotations

import io
import json
import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core.home import is_inside
from cmbagent_jupyter.core import Checkpoint, CheckpointKind, InvalidInput, Run, Step, new_id, utcnow
from cmbagent_jupyter.store.atomic import write_atomically
from cmbagent_jupyter.store.port import SessionPort

FORMAT = "cmbagent-jupyter/checkpoint"
FORMAT_VERSION = 1
MAX_PICKLE_BYTES = 512 * 1024 * 1024

_SAFE_BUILTINS = {
    "dict", "list", "set", "frozenset", "tuple", "str", "bytes", "bytearray", "int", "float", "complex", "bool",
    "slice", "range", "object", "NoneType",
}
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"), ("decimal", "Decimal"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("uuid", "UUID"),
    ("zoneinfo", "ZoneInfo"), ("_codecs", "encode"),
}
# numpy and pandas values: their classes of data, and the functions their pickles call
# to rebuild them. Nothing else from those packages (numpy.savetxt, numpy.memmap,
# numpy.testing's runstring, DataFrame.to_csv reached by a dotted name, pandas.io ...)
# may be called by a pickle, since any of them touches files or runs code.
_DATA_PACKAGES = ("numpy", "pandas")
_BLOCKED_MODULES = ("numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "numpy.lib.npyio",
                    "numpy.lib._npyio_impl", "numpy.lib.format", "numpy._pytesttester", "pandas.io",
                    "pandas.core.computation", "pandas.plotting", "pandas.util", "pandas.testing", "pandas._testing")
_RECONSTRUCTORS = {
    "_reconstruct", "scalar", "_frombuffer", "_mareconstruct", "__bit_generator_ctor", "__generator_ctor",
    "__randomstate_ctor", "_unpickle_block", "new_block", "_new_Index", "_new_DatetimeIndex", "_new_PeriodIndex",
    "_new_IntervalIndex", "_unpickle_timestamp", "_timedelta_unpickle", "_unpickle_period",
}


def _is_data_class(module: str, obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if module.startswith("numpy"):
        import numpy as np

        if issubclass(obj, np.memmap):
            return False
        return issubclass(obj, (np.ndarray, np.generic, np.dtype, np.random.BitGenerator, np.random.Generator,
                                np.random.RandomState, np.random.SeedSequence))
    return module.startswith(("pandas.core.", "pandas._libs."))


class UnsafePickle(InvalidInput):
    pass


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        top = module.split(".")[0]
        blocked = any(module == b or module.startswith(b + ".") for b in _BLOCKED_MODULES)
        if top in _DATA_PACKAGES and "." not in name and not blocked:
            obj = super().find_class(module, name)
            # Cython's __pyx_unpickle_X only rebuilds a class that itself passed this check
            if name in _RECONSTRUCTORS or name.startswith("__pyx_unpickle_") or _is_data_class(module, obj):
                return obj
        raise UnsafePickle(f"refusing to load {module}.{name} from a pickle: only plain data, datetimes, "
                           f"numpy and pandas values are accepted")


def safe_load(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise InvalidInput(f"{path} is {size} bytes; pickles over {MAX_PICKLE_BYTES} bytes are not loaded")
    data = path.read_bytes()
    try:
        return _AllowListUnpickler(io.BytesIO(data)).load()
    except UnsafePickle:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise InvalidInput(f"{path} is not a readable pickle: {type(exc).__name__}: {exc}") from None


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON image of a context for the store; the pickle keeps the exact objects."""
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        try:
            return jsonable(value.to_dict(orient="records"), depth + 1)
        except TypeError:
            return jsonable(value.to_dict(), depth + 1)
    if hasattr(value, "tolist"):
        return jsonable(value.tolist(), depth + 1)
    return repr(value)


class CheckpointWriter:
    """Writes and reads a run's checkpoints in both places."""

    def __init__(self, store: SessionPort, home: Path):
        self.store = store
        self.home = Path(home)

    def save(self, run: Run, *, kind: CheckpointKind | str, context: dict[str, Any], steps: list[Step] | None = None,
             step: Step | None = None) -> Checkpoint:
        kind = CheckpointKind(kind)
        cid = new_id("checkpoint")
        now = utcnow()
        run_path = Path(run.path)
        path = run_path / "checkpoints" / f"ckpt_{now.strftime('%Y%m%dT%H%M%S%f')}_{kind.value}_{cid}.pkl"
        if steps is None:
            steps = self.store.list_steps(run.id)
        session = self.store.info()
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "checkpoint": {"id": cid, "kind": kind.value, "step_id": step.id if step else None,
                           "created_at": now.isoformat()},
            "session": session.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json") for s in steps],
            "context": context,
        }
        write_atomically(path, pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL))
        self.store.put_checkpoint(run.id, kind=kind.value, context=jsonable(context),
                                  step_id=step.id if step else None, pickle_path=str(path), checkpoint_id=cid)
        return Checkpoint(id=cid, session_id=run.session_id, run_id=run.id, step_id=step.id if step else None,
                          kind=kind, context=jsonable(context), pickle_path=str(path), created_at=now)

    def load_context(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """The exact context of a checkpoint: from its pickle when present, else the store's copy."""
        if checkpoint.pickle_path:
            path = Path(checkpoint.pickle_path)
            if path.exists():
                return read_checkpoint_file(path, self.home)["context"]
        return dict(checkpoint.context)

    def latest_context(self, run_id: str) -> tuple[Checkpoint | None, dict[str, Any]]:
        cp = self.store.latest_checkpoint(run_id)
        if cp is None:
            return None, {}
        return cp, self.load_context(cp)


def read_checkpoint_file(path: Path, home: Path) -> dict[str, Any]:
    if not is_inside(path, Path(home) / "sessions"):
        raise InvalidInput(f"refusing to load {path}: checkpoint files are only read from {Path(home) / 'sessions'}")
    doc = safe_load(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a cmbagent-jupyter checkpoint")
    if int(doc.get("version", 0)) > FORMAT_VERSION:
        raise InvalidInput(f"{path} was written by a newer cmbagent-jupyter (format {doc.get('version')})")
    return doc


CMBAGENT_CONTEXT_KEYS = ("main_task", "final_plan", "number_of_steps_in_plan", "current_plan_step_number",
                         "previous_steps_execution_summary", "agent_for_sub_task", "current_sub_task")


def read_cmbagent_context(path: Path) -> dict[str, Any]:
    """A context pickle as CMBAgent writes it (a plain dict), checked for its usual keys."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no context file at {path}")
    ctx = safe_load(path)
    if not isinstance(ctx, dict):
        raise InvalidInput(f"{path} holds a {type(ctx).__name__}, not a CMBAgent context dict")
    if not any(k in ctx for k in CMBAGENT_CONTEXT_KEYS):
        raise InvalidInput(f"{path} does not look like a CMBAgent context: none of {', '.join(CMBAGENT_CONTEXT_KEYS)}")
    return ctx


def plan_steps_from_context(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """CMBAgent's final_plan (a dict with sub_tasks, or a JSON string of one) as plan steps."""
    plan = ctx.get("final_plan")
    if isinstance(plan, str):
        try:
            plan = json.loads(plan)
        except ValueError:
            return []
    if isinstance(plan, dict):
        plan = plan.get("sub_tasks") or plan.get("steps") or []
    if not isinstance(plan, list):
        return []
    steps = []
    for i, item in enumerate(plan, start=1):
        if not isinstance(item, dict):
            continue
        bullets = item.get("bullet_points") or []
        desc = str(item.get("sub_task") or item.get("description") or "")
        if bullets:
            desc += "\n" + "\n".join(f"- {b}" for b in bullets)
        steps.append({"key": f"step_{i}", "number": i, "agent": str(item.get("sub_task_agent") or "engineer"),
                      "description": desc, "depends_on": [f"step_{i - 1}"] if i > 1 else []})
    return steps

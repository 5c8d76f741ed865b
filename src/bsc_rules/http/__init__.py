"""The HTTP door (``bsc-rules serve``): CloudEvents in, reports, metrics and health out.

Needs the optional ``http`` extra (Starlette, uvicorn, prometheus_client); nothing in the
core imports this package. Without the extra, importing it raises a :class:`UsageError`
that says how to install it.
"""

from importlib.util import find_spec

from bsc_rules.errors import UsageError

_MISSING = [name for name in ("starlette", "uvicorn", "prometheus_client") if not find_spec(name)]
if _MISSING:
    msg = f"the HTTP door needs {', '.join(_MISSING)}: pip install 'bsc-rules[http]'"
    raise UsageError(msg)

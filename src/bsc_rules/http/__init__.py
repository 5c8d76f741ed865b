"""The HTTP door (``bsc-rules serve``): CloudEvents in, reports, metrics and health out.

Needs the optional ``http`` extra (Starlette, uvicorn, prometheus_client); nothing in the
core imports this package.
"""

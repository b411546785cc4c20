"""The dashboard: server-rendered pages beside the API."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add the dashboard's routes to `app`."""

"""JUnit reports as the suite checks them: validated against the schema Jenkins and GitLab
read (`tests/data/junit.xsd`), then read into plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xmlschema

SCHEMA = xmlschema.XMLSchema(Path(__file__).resolve().parent / "data" / "junit.xsd")


def read_report(document: str | bytes) -> dict[str, Any]:
    """The report as data; `XMLSchemaValidationError` if it does not fit the schema."""
    text = document.decode() if isinstance(document, bytes) else document
    SCHEMA.validate(text)
    data = SCHEMA.to_dict(text)
    assert isinstance(data, dict)
    return data

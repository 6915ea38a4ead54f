"""The error body every 4xx carries: which field, what is wrong, how to fix it."""

from __future__ import annotations

from pydantic import BaseModel


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    problems: list[FieldProblem] = []

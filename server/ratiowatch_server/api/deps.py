"""Request-scoped dependencies: a database session per request, the query layer, the rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ratiowatch_server.alerts.rules import Rule
from ratiowatch_server.query import Query


def _session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with request.app.state.sessions.begin() as session:
        yield session


def _query(request: Request) -> Query:
    query: Query = request.app.state.query
    return query


def _rules(request: Request) -> list[Rule]:
    rules: list[Rule] = request.app.state.rules
    return rules


# scope="function": commit before the response is sent, so an acknowledged write is durable.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
QueryDep = Annotated[Query, Depends(_query)]
RulesDep = Annotated[list[Rule], Depends(_rules)]

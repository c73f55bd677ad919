"""Exceptions the service maps to HTTP answers.

ServiceError
├── NotFoundError      -> 404
└── BadRequestError    -> 400
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500


class NotFoundError(ServiceError):
    """A run, alert or other resource named in the request does not exist."""

    status_code = 404


class BadRequestError(ServiceError):
    """The request is well-formed JSON but asks for something impossible."""

    status_code = 400

"""The error taxonomy and its helpers."""

from __future__ import annotations

import email.utils
import pickle
import time

import pytest

from adapters import errors
from adapters.errors import (
    AdapterError,
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    InvalidInput,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    class_for_status,
    parse_retry_after,
    scrub,
)


def test_tree_and_transient_flags() -> None:
    assert issubclass(InvalidInput, AdapterError) and issubclass(InvalidInput, ValueError)
    transient = {c for c in (RateLimited, Overloaded, Timeout, ServerError, ContextTooLong, ContentFiltered,
                             AuthError, BadRequest) if c.transient}
    assert transient == {Overloaded, Timeout, ServerError}
    assert all(issubclass(c, ProviderError) for c in (RateLimited, Overloaded, Timeout, ServerError,
                                                      ContextTooLong, ContentFiltered, AuthError, BadRequest))
    assert set(errors.__all__) >= {"AdapterError", "InvalidInput", "ProviderError", "RateLimited"}


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequest), (401, AuthError), (403, AuthError), (404, BadRequest), (408, Timeout), (409, BadRequest),
     (413, BadRequest), (422, BadRequest), (429, RateLimited), (500, ServerError), (502, ServerError),
     (503, Overloaded), (504, Timeout), (529, Overloaded), (599, ServerError)],
)
def test_class_for_status(status: int, cls: type[ProviderError]) -> None:
    assert class_for_status(status) is cls


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 <= (parse_retry_after({"retry-after": future}) or 0) <= 121
    past = email.utils.formatdate(time.time() - 120, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_scrub_masks_given_secrets_and_key_shapes() -> None:
    assert scrub("key=my-secret-value here", ["my-secret-value"]) == "key=*** here"
    assert "sk-proj-abcdefghijk123" not in scrub("Incorrect API key provided: sk-proj-abcdefghijk123.")
    assert "AIzaSyA1234567890abcdefghijkl" not in scrub("url?key=AIzaSyA1234567890abcdefghijkl")
    assert scrub("Authorization: Bearer abc.def-ghi_123") == "Authorization: Bearer ***"
    assert scrub("nothing secret", [None, "", "x"]) == "nothing secret"
    assert len(scrub("y" * 10_000)) < 2100


def test_str_repr_and_pickle() -> None:
    err = RateLimited("slow down", provider="openai", model="gpt-4o", status=429, retry_after=2.0)
    assert str(err) == "openai/gpt-4o: RateLimited (HTTP 429): slow down"
    assert "retry_after=2.0" in repr(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is RateLimited and (back.message, back.provider, back.model, back.status, back.retry_after) == (
        "slow down", "openai", "gpt-4o", 429, 2.0)
    assert str(Timeout("late", provider="p", model="m")) == "p/m: Timeout: late"

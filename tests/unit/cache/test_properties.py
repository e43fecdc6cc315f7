"""Hypothesis properties of the pure core: keys, TTL jitter, freshness and XFetch."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from scalepatterns.cache.keys import KeyBuilder
from scalepatterns.cache.policy import (
    Freshness,
    classify,
    decode_entry,
    encode_entry,
    jittered,
    should_refresh_early,
)

scalars = st.one_of(st.integers(), st.text(), st.booleans(), st.none(), st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def two(a: object, b: object = None) -> None:
    """A function to key."""


BUILDER = KeyBuilder(two, qualname="m.two")


@given(values, values, values, values)
def test_shared_keys_are_equal_exactly_when_arguments_are(a, b, c, d) -> None:  # type: ignore[no-untyped-def]
    k1 = BUILDER.shared(BUILDER.bind((a, b), {}), "ns:")
    k2 = BUILDER.shared(BUILDER.bind((c,), {"b": d}), "ns:")
    same = BUILDER.bind((a, b), {}) == BUILDER.bind((c, d), {}) and all(
        type(x) is type(y) for x, y in zip((a, b), (c, d), strict=True)
    )
    if same and repr((a, b)) == repr((c, d)):
        assert k1 == k2
    if k1 == k2:
        assert repr((a, b)) == repr((c, d))


@given(values, values)
def test_positional_and_keyword_calls_share_a_key(a, b) -> None:  # type: ignore[no-untyped-def]
    head = "ns:"
    assert BUILDER.shared(BUILDER.bind((a, b), {}), head) == BUILDER.shared(
        BUILDER.bind((), {"a": a, "b": b}), head
    )


@given(st.text(), st.text())
def test_text_cannot_forge_the_key_of_another_call(a, b) -> None:  # type: ignore[no-untyped-def]
    k = BUILDER.shared((a, b), "ns:")
    if (a, b) != ("x", "y"):
        assert k != BUILDER.shared(("x", "y"), "ns:")
    assert k.startswith("ns:m.two:")


@given(st.floats(0.001, 1e6), st.floats(0, 0.99), st.floats(0, 1))
def test_jitter_never_lengthens_and_stays_within_the_fraction(ttl, jitter, rand) -> None:  # type: ignore[no-untyped-def]
    got = jittered(ttl, jitter, rand)
    assert ttl * (1 - jitter) - 1e-9 <= got <= ttl


@given(
    st.floats(0, 1e6),
    st.floats(0, 1e3),
    st.floats(0.0, 100),
    st.floats(0.01, 10),
    st.floats(1e-12, 1.0),
)
def test_xfetch_refreshes_more_as_expiry_nears(now, left, delta, beta, rand) -> None:  # type: ignore[no-untyped-def]
    expires = now + left
    if should_refresh_early(now, expires, delta, beta, rand):
        # later moments, a slower load or a larger beta refresh too
        assert should_refresh_early(now + 1, expires, delta, beta, rand)
        assert should_refresh_early(now, expires, delta * 2, beta, rand)
    if delta == 0 and expires > now:
        assert not should_refresh_early(now, expires, delta, beta, rand)


@given(st.floats(0, 1e6), st.floats(-100, 100), st.floats(0, 100), st.floats(0, 1))
def test_classify_orders_fresh_stale_expired(now, offset, stale, rand) -> None:  # type: ignore[no-untyped-def]
    fresh_until = now + offset
    state = classify(now, fresh_until, fresh_until + stale, 0.0, 0.0, rand)
    if now < fresh_until:
        assert state is Freshness.FRESH
    elif now < fresh_until + stale:
        assert state is Freshness.STALE
    else:
        assert state is Freshness.EXPIRED


@given(st.binary(), st.floats(allow_nan=False), st.floats(0, 1e3))
def test_envelope_round_trips(payload, fresh, delta) -> None:  # type: ignore[no-untyped-def]
    assert decode_entry(encode_entry(payload, fresh, delta)) == (payload, fresh, delta)


def test_plain_bytes_are_fresh_forever() -> None:
    assert decode_entry(b'{"a":1}') == (b'{"a":1}', math.inf, 0.0)

"""Properties of the trust boundary (issue 17), bounded in count and time: a signed wrapper
verifies whatever it holds and stops verifying at any change; the MAC does not depend on
the order its fields were built in; base64 broken into lines of any width, LF or CRLF,
with or without a byte order mark, reads as the same event as the raw JSON."""
from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from ecs_worker.events.body import decode_body
from ecs_worker.events.wrapper import FORGED, SIGNED, unwrap, verdict, wrap
from ecs_worker.trust.fleet_key import Signer, canonical

PROPERTY = settings(derandomize=True, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])
KEY = Signer(["k" * 32])
TEXT = st.text(max_size=20)
STATE = st.recursive(st.none() | st.booleans() | st.integers() | TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=12)
TIMES = st.floats(min_value=1e9, max_value=2e9)


@PROPERTY
@given(body=TEXT, key=st.text(min_size=1, max_size=40), state=STATE, attempts=st.integers(0, 100),
       since=TIMES, wait=st.floats(0, 40 * 86400), flip=st.integers(0, 10**6))
def test_a_signed_wrapper_verifies_and_no_change_to_it_does(body, key, state, attempts, since, wait, flip):
    resume = {"p": since, "~state": {"p": state}}
    text = wrap(json.dumps({"b": body}).encode(), key, resume, attempts, since, since + wait, signer=KEY).body
    got = unwrap(text)
    assert got is not None and verdict(got, KEY) == SIGNED and got.resume == resume
    assert got.until <= since + 30 * 86400  # never due past the cap
    doc = json.loads(text)
    meta = doc["ecs_worker_deferred"]
    field = ["key", "attempts", "since", "until", "resume", "body"][flip % 6]
    if field == "body":
        doc["body"] = doc["body"] + " "
    elif field == "resume":
        meta["resume"] = {**meta["resume"], "~state": {"p": [state]}}
    elif field == "key":
        meta["key"] = meta["key"] + "x"
    else:
        meta[field] = meta[field] + 1
    changed = unwrap(json.dumps(doc))
    assert changed is not None and verdict(changed, KEY) == FORGED


@PROPERTY
@given(doc=st.dictionaries(TEXT, STATE, max_size=6))
def test_the_canonical_encoding_ignores_field_order(doc):
    reordered = dict(reversed(list(doc.items())))
    assert canonical(doc) == canonical(reordered)
    assert KEY.verify(reordered, KEY.sign(doc))


@PROPERTY
@given(content=st.dictionaries(TEXT, TEXT, max_size=8), width=st.integers(4, 120),
       crlf=st.booleans(), bom=st.booleans(), bom_outside=st.booleans())
def test_line_broken_base64_reads_as_the_raw_event(content, width, crlf, bom, bom_outside):
    raw = json.dumps({"id": "e-1", "name": "Test:Event", "content": content}).encode()
    encoded = base64.b64encode((b"\xef\xbb\xbf" if bom else b"") + raw).decode()
    lines = [encoded[i:i + width] for i in range(0, len(encoded), width)]
    body = ("\r\n" if crlf else "\n").join(lines) + "\n"
    if bom_outside:
        body = "\ufeff" + body
    assert decode_body(body.encode()) == decode_body(raw)

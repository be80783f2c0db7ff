"""Many messages of one topic as one JSON text, column by column: the unit the transports store and
send instead of one row or one record per message.

The embedded log's rows and Kafka's batch records both hold this format: {"k": key,
or [keys] when they differ, "v": [values], "hc": {header: value shared by all}, "hv": {header:
[values]}}; messages whose header names differ fall back to "h": [headers]. Half the bytes of a
list of messages, and several times cheaper to encode and decode, since the per-message work is
list building in C rather than a dict per message.
"""

from __future__ import annotations

import json
from itertools import repeat
from typing import Sequence

from lib.messages import Message

# A message's offset is (the container's offset << SHIFT) + its index in it: offsets stay
# increasing integers, and a container may hold up to 2**SHIFT messages.
SHIFT = 20
MAX_MESSAGES = (1 << SHIFT) - 1


def encode(msgs: Sequence[Message]) -> str:
    keys = [m.key for m in msgs]
    body: dict = {"k": keys[0] if keys.count(keys[0]) == len(keys) else keys, "v": [m.value for m in msgs]}
    names = msgs[0].headers.keys()
    if all(m.headers.keys() == names for m in msgs):
        hc, hv = {}, {}
        for name in names:
            col = [m.headers[name] for m in msgs]
            if col.count(col[0]) == len(col):
                hc[name] = col[0]
            else:
                hv[name] = col
        body["hc"], body["hv"] = hc, hv
    else:
        body["h"] = [m.headers for m in msgs]
    return json.dumps(body, separators=(",", ":"))


def unpack(topic: str, body: str | bytes, partition: int = 0, base: int = 0) -> list[Message]:
    """The messages of `body`, the i-th with offset (base << SHIFT) + i."""
    d = json.loads(body)
    values = d["v"]
    n = len(values)
    keys = d["k"] if isinstance(d["k"], list) else repeat(d["k"], n)
    if "h" in d:
        headers = d["h"]
    else:
        # One dict per message, built from the columns (shared values repeated): the per-message
        # work of a consumer, so kept to a zip and a map.
        hc, hv = d["hc"], d["hv"]
        names = [*hc, *hv]
        cols = [repeat(v, n) for v in hc.values()] + list(hv.values())
        headers = [dict(zip(names, row)) for row in zip(*cols)] if cols else [{} for _ in range(n)]
    first = base << SHIFT
    return list(map(Message, repeat(topic, n), keys, values, headers, repeat(partition, n), range(first, first + n)))


def merge(bodies: Sequence[str]) -> str:
    """Several encoded bodies of one topic and key as one, in order: the columns are concatenated
    without building a message each (a header shared within each body but not across them becomes a
    column). Bodies that do not line up (keys or header names differ) go through `unpack`."""
    ds = [json.loads(b) for b in bodies]
    first = ds[0]
    names = [*first.get("hc", ()), *first.get("hv", ())]
    if any(
        "h" in d
        or isinstance(d["k"], list)
        or d["k"] != first["k"]
        or len(d["hc"]) + len(d["hv"]) != len(names)
        or any(name not in d["hc"] and name not in d["hv"] for name in names)
        for d in ds
    ):
        return encode([m for b in bodies for m in unpack("", b)])
    hc, hv = {}, {}
    for name in names:
        shared = [d["hc"].get(name, hv) for d in ds]  # `hv` marks "not shared in this body"
        if shared[0] is not hv and shared.count(shared[0]) == len(shared):
            hc[name] = shared[0]
        else:
            hv[name] = [v for d in ds for v in (d["hv"][name] if name in d["hv"] else [d["hc"][name]] * len(d["v"]))]
    return json.dumps(
        {"k": first["k"], "v": [v for d in ds for v in d["v"]], "hc": hc, "hv": hv}, separators=(",", ":")
    )

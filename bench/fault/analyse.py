"""What the records say: for every subscriber, what it was owed and what it
got.

A subscriber is owed every acknowledged (202) event of its topics issued
after the first id it was given (the cursor of its first stream), except
the stretches a `sidecast.reset` told it it had missed: from the last id it
had before the reset up to the reset's id. Everything it was owed and did
not get is lost. Ids are compared as sidecast issues them today,
`<epoch>-<seq>` with seqs rising within an epoch; epochs are ordered by when
they were first seen (an acknowledgement or a stream).
"""

from sub import CURSOR, EV, RESET, UNAVAILABLE


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def split_id(text):
    ep, _, seq = text.rpartition("-")
    return ep, int(seq) if seq.isdigit() else -1


def analyse(acks, dumps, marks=None):
    """`acks`: the publisher's records (dicts), by event number; `dumps`:
    the subscriber processes' records; `marks`: name -> time (ms) of the
    faults, to count what happened after them."""
    marks = marks or {}
    by_n = {a["n"]: a for a in acks}
    # epochs in the order they were first seen
    first_seen = {}
    for a in acks:
        if a["status"] == 202 and a["id"]:
            ep = split_id(a["id"])[0]
            first_seen[ep] = min(first_seen.get(ep, a["t_done"]), a["t_done"])
    for d in dumps:
        for s in d["subs"].values():
            for i, ep in enumerate(s["epoch"]):
                if ep < len(d["epochs"]):
                    name = d["epochs"][ep]
                    t = s["t_ms"][i]
                    if t < first_seen.get(name, 1 << 62):
                        first_seen[name] = t
    rank = {ep: i for i, ep in enumerate(sorted(first_seen, key=first_seen.get))}
    # acknowledged events per topic, as (rank, seq, n)
    acked = {}
    n_acked = 0
    for a in acks:
        if a["status"] == 202 and a["id"]:
            ep, seq = split_id(a["id"])
            acked.setdefault(a["topic"], []).append((rank[ep], seq, a["n"]))
            n_acked += 1
    for v in acked.values():
        v.sort()

    res = {"subscribers": 0, "never_connected": 0, "delivered": 0, "lost": 0,
           "lost_events": set(), "lost_subs": 0, "dup_ids": 0, "dup_after_dedup": 0,
           "reordered": 0, "resets": 0, "reset_subs": 0, "wrong": 0, "wrong_topic": 0,
           "refused_but_delivered": 0, "unknown_delivered": 0, "epoch_switch_no_reset": 0,
           "unavailable": 0, "non200": 0, "reconnects": 0, "gaps_ms": [], "connect_ms": [],
           "drop_reasons": {}, "per_sub": [], "resets_after": {k: 0 for k in marks},
           "told_after": {k: 0 for k in marks}, "reset_behind": 0, "missed_told": 0,
           "lost_examples": []}
    for d in dumps:
        names = d["epochs"]
        for idx, s in d["subs"].items():
            _one(res, idx, s, names, rank, acked, by_n, marks)
    res["lost_events"] = len(res["lost_events"])
    per = sorted(res.pop("per_sub"))
    res["delivered_per_sub"] = {"min": per[0] if per else 0, "p50": pct(per, 50),
                                "max": per[-1] if per else 0}
    gaps = res.pop("gaps_ms")
    conn = res.pop("connect_ms")
    res["reconnect_ms"] = {"n": len(gaps), "p50": pct(gaps, 50), "p99": pct(gaps, 99),
                           "max": max(gaps) if gaps else None}
    res["connect_ms"] = {"p50": pct(conn, 50), "p99": pct(conn, 99),
                         "max": max(conn) if conn else None}
    res["published"] = len(acks)
    res["acked"] = n_acked
    st = {}
    for a in acks:
        k = str(a["status"]) + (f"/{a['outcome']}" if a["status"] == 503 else "")
        st[k] = st.get(k, 0) + 1
    res["publish_status"] = st
    return res


def _one(res, idx, s, names, rank, acked, by_n, marks):
    res["subscribers"] += 1
    res["wrong_topic"] += s["wrong_topic"]
    kinds, eps, seqs, nums, ts = s["kind"], s["epoch"], s["seq"], s["num"], s["t_ms"]

    def rk(e):
        return rank.get(names[e], -1) if e < len(names) else -1

    start = None  # (rank, seq) of the first id given
    pos = None
    excused = []  # [(from (rank, seq) exclusive, to (rank, seq) inclusive)]
    seen = set()
    seen_n = set()
    got = set()
    top = {}  # rank -> highest seq delivered
    top_rank = -1
    delivered = 0
    resets = 0
    # marks after which this subscriber was told by a reset into a newer
    # epoch (a node restarted without its history, Redis lost its data):
    # counted once per subscriber, not per reset
    told = set()
    for i, k in enumerate(kinds):
        e = eps[i]
        cur = (rk(e), seqs[i])
        if k == UNAVAILABLE:
            res["unavailable"] += 1
            continue
        if e == 0xFFFF:
            continue
        if start is None:
            start = cur
        if k == RESET:
            resets += 1
            for name, t in marks.items():
                if ts[i] >= t:
                    res["resets_after"][name] += 1
                    # the in-band reset of a new epoch carries the new
                    # epoch's first id: from here on the subscriber knows
                    if pos is None or cur[0] > pos[0]:
                        told.add(name)
            if pos is not None:
                if cur < pos:
                    # a reset whose id sorts before what the stream already
                    # had: a client would resume from an older point
                    res["reset_behind"] += 1
                excused.append((pos, cur))
            pos = cur if pos is None or cur > pos else pos
            continue
        if k == CURSOR:
            if pos is not None and cur[0] != pos[0]:
                # a new epoch's cursor without a reset: nothing told it
                res["epoch_switch_no_reset"] += 1
            pos = cur if pos is None or cur > pos else pos
            continue
        if k != EV:
            continue
        if pos is not None and cur[0] != pos[0] and cur[0] > pos[0]:
            res["epoch_switch_no_reset"] += 1
        if cur in seen:
            res["dup_ids"] += 1
            pos = cur
            continue
        seen.add(cur)
        n = nums[i]
        if n in seen_n:
            res["dup_after_dedup"] += 1
        seen_n.add(n)
        if cur[0] < top_rank or cur[1] < top.get(cur[0], -1):
            res["reordered"] += 1
        top_rank = max(top_rank, cur[0])
        top[cur[0]] = max(top.get(cur[0], -1), cur[1])
        delivered += 1
        got.add(cur)
        a = by_n.get(n)
        if n < 0 or a is None:
            res["wrong"] += 1
        elif a["status"] == 202:
            if a["id"] is None or (rank.get(split_id(a["id"])[0]), split_id(a["id"])[1]) != cur:
                res["wrong"] += 1
        elif a["status"] == 503 and a["outcome"] == "not_published":
            res["refused_but_delivered"] += 1
        else:
            res["unknown_delivered"] += 1
        pos = cur
    for name in told:
        res["told_after"][name] += 1
    res["per_sub"].append(delivered)
    res["delivered"] += delivered
    res["resets"] += resets
    res["reset_subs"] += resets > 0
    if start is None:
        res["never_connected"] += 1
        return
    lost = 0
    for t in s["topics"]:
        for (r, q, n) in acked.get(t, ()):
            if (r, q) <= start or (r, q) in got:
                continue
            if any(lo < (r, q) <= hi for lo, hi in excused):
                res["missed_told"] += 1
                continue
            lost += 1
            res["lost_events"].add(n)
            if len(res["lost_examples"]) < 10:
                res["lost_examples"].append({"sub": idx, "n": n, "id": by_n[n]["id"],
                                             "topic": t})
    res["lost"] += lost
    res["lost_subs"] += lost > 0
    # reconnect gaps: from a stream's end to the next stream's first bytes
    conns = s["conns"]
    end = None
    for c in conns:
        port, t_att, t_open, t_end, status, first, sent, *why = c
        why = why[0] if why else None
        if why:
            res["drop_reasons"][why] = res["drop_reasons"].get(why, 0) + 1
        if status not in (0, 200):
            res["non200"] += 1
        real = t_open is not None and first != UNAVAILABLE
        if real:
            res["connect_ms"].append(t_open - t_att)
            if end is not None:
                res["gaps_ms"].append(t_open - end)
                res["reconnects"] += 1
                end = None
        # a failed attempt or a refusal keeps the gap open from the first drop
        if why not in ("stopped", None) and end is None and (real or t_open is not None):
            end = t_end

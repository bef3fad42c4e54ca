"""fastgate._core.buckets at its Python boundary: hash, bucket math, all-or-nothing, bounded
memory under a flood of keys, sharing across forked processes, dead lock owners."""
from __future__ import annotations

import math
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fastgate._core.buckets import (
    MAX_KEYS, WAYS, BucketPlan, TokenBucketTable, _siphash128, monotonic_ns,
)

SEC = 1_000_000_000
T0 = 1_000 * SEC          # an arbitrary injected "now"

# Reference vectors of SipHash-2-4-128 (veorq/SipHash vectors.h, vectors_sip128): key 00..0f,
# message 00..(len-1).
SIP128 = {
    0: "a3817f04ba25a8e66df67214c7550293",
    1: "da87c1d86b99af44347659119b22fc45",
    7: "a1f1ebbed8dbc153c0b84aa61ff08239",
    8: "3b62a9ba6258f5610f83e264f31497b4",
    9: "264499060ad9baabc47f8b02bb6d71ed",
    15: "5493e99933b0a8117e08ec0f97cfc3d9",
    16: "6ee2a4ca67b054bbfd3315bf85230577",
    17: "473d06e8738db89854c066c47ae47740",
    31: "2939b0183223fafc1723de4f52c43d35",
    63: "5150d1772f50834a503e069a973fbd7c",
}


@pytest.mark.parametrize("length", sorted(SIP128))
def test_siphash128_reference_vectors(length):
    assert _siphash128(bytes(range(16)), bytes(range(length))).hex() == SIP128[length]


def test_siphash_key_must_be_16_bytes():
    with pytest.raises(ValueError):
        _siphash128(b"short", b"")


# ---------------------------------------------------------------------------- bucket math

def test_burst_then_refill():
    t = TokenBucketTable(1024, shared=False)
    # 2 per second, burst 5.
    got = [t.take(b"k", 2.0, 5.0, 1.0, T0).allowed for _ in range(7)]
    assert got == [True] * 5 + [False] * 2
    # 0.5 s later exactly one token has come back.
    assert t.take(b"k", 2.0, 5.0, 1.0, T0 + SEC // 2).allowed
    assert not t.take(b"k", 2.0, 5.0, 1.0, T0 + SEC // 2).allowed
    # After a long idle the bucket is full again, never above the burst.
    later = T0 + 3600 * SEC
    assert [t.take(b"k", 2.0, 5.0, 1.0, later).allowed for _ in range(6)] == [True] * 5 + [False]


def test_result_figures():
    t = TokenBucketTable(1024, shared=False)
    r = t.take(b"k", 10.0, 20.0, 1.0, T0)
    assert (r.allowed, r.index, r.remaining, r.retry_after_s) == (True, 0, 19.0, 0.0)
    assert r.reset_s == pytest.approx(0.1)
    for _ in range(19):
        r = t.take(b"k", 10.0, 20.0, 1.0, T0)
    assert r.allowed and r.remaining == 0.0 and r.reset_s == pytest.approx(2.0)
    r = t.take(b"k", 10.0, 20.0, 1.0, T0)
    assert not r.allowed
    assert r.retry_after_s == pytest.approx(0.1)
    assert r.remaining == 0.0 and r.reset_s == pytest.approx(2.0)
    r = t.take(b"k", 10.0, 20.0, 3.0, T0 + SEC // 20)    # 0.5 token there, 3 wanted
    assert not r.allowed and r.retry_after_s == pytest.approx(0.25)


def test_denial_consumes_nothing():
    t = TokenBucketTable(1024, shared=False)
    assert t.take(b"k", 1.0, 10.0, 7.0, T0).allowed
    assert not t.take(b"k", 1.0, 10.0, 4.0, T0).allowed     # 3 left: refused whole
    assert t.peek(b"k", 1.0, 10.0, T0) == pytest.approx(3.0)
    assert t.take(b"k", 1.0, 10.0, 3.0, T0).allowed


def test_cost_is_a_parameter():
    t = TokenBucketTable(1024, shared=False)
    assert t.take(b"k", 100.0, 1000.0, 999.5, T0).allowed
    assert t.take(b"k", 100.0, 1000.0, 0.5, T0).allowed
    r = t.take(b"k", 100.0, 1000.0, 0.25, T0)
    assert not r.allowed and r.retry_after_s == pytest.approx(0.0025)
    assert t.take(b"k", 100.0, 1000.0, 0.0, T0).allowed       # free admission at 0 tokens


def test_cost_above_burst_is_never_admitted_and_stores_nothing():
    t = TokenBucketTable(1024, shared=False)
    r = t.take(b"k", 1.0, 5.0, 6.0, T0)
    assert not r.allowed and r.retry_after_s == math.inf and r.remaining == 5.0
    assert t.stats(T0)["used"] == 0


def test_full_bucket_is_not_stored():
    t = TokenBucketTable(1024, shared=False)
    t.take(b"k", 1.0, 5.0, 1.0, T0)
    assert t.stats(T0)["used"] == 1
    # Once refilled, touching it frees its slot.
    t.take(b"k", 1.0, 5.0, 0.0, T0 + 10 * SEC)
    assert t.stats(T0 + 10 * SEC)["used"] == 0


def test_debit_goes_negative_and_delays_later_takes():
    t = TokenBucketTable(1024, shared=False)
    r = t.debit(b"k", 10.0, 100.0, 150.0, T0)
    assert r.allowed and r.tokens == pytest.approx(-50.0) and r.remaining == 0.0
    assert r.reset_s == pytest.approx(15.0)
    assert not t.take(b"k", 10.0, 100.0, 1.0, T0 + 5 * SEC).allowed      # at 0 tokens
    assert t.take(b"k", 10.0, 100.0, 1.0, T0 + 5 * SEC + SEC // 10).allowed
    assert t.peek(b"k", 10.0, 100.0, T0 + 5 * SEC + SEC // 10) == pytest.approx(0.0)


def test_lower_burst_after_reload_clamps():
    t = TokenBucketTable(1024, shared=False)
    t.take(b"k", 1.0, 100.0, 1.0, T0)                 # 99 left
    r = t.take(b"k", 1.0, 10.0, 1.0, T0)              # limit lowered: at most 10 there
    assert r.allowed and r.remaining == 9.0


def test_keys_are_independent():
    t = TokenBucketTable(1024, shared=False)
    assert t.take(b"a", 1.0, 1.0, 1.0, T0).allowed
    assert not t.take(b"a", 1.0, 1.0, 1.0, T0).allowed
    assert t.take(b"b", 1.0, 1.0, 1.0, T0).allowed
    assert t.take(b"a" * 10_000, 1.0, 1.0, 1.0, T0).allowed     # long keys are hashed, not kept
    assert t.take(b"", 1.0, 1.0, 1.0, T0).allowed


def test_real_clock_is_monotonic_ns():
    import time
    a = time.monotonic_ns()
    b = monotonic_ns()
    assert a <= b <= time.monotonic_ns()
    t = TokenBucketTable(1024, shared=False)
    assert t.take(b"k", 1.0, 1.0).allowed
    assert not t.take(b"k", 1e-6, 1.0).allowed


@pytest.mark.parametrize("args", [
    (0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (math.nan, 1.0, 1.0), (math.inf, 1.0, 1.0),
    (1.0, 0.0, 1.0), (1.0, math.nan, 1.0), (1.0, 1.0, -1.0), (1.0, 1.0, math.nan),
    (1.0, 1.0, math.inf),
])
def test_take_rejects_bad_numbers(args):
    t = TokenBucketTable(1024, shared=False)
    with pytest.raises(ValueError):
        t.take(b"k", *args)
    with pytest.raises(ValueError):
        t.debit(b"k", *args)


def test_take_rejects_non_bytes_keys():
    t = TokenBucketTable(1024, shared=False)
    for bad in ("k", None, bytearray(b"k"), memoryview(b"k")):
        with pytest.raises(TypeError):
            t.take(bad, 1.0, 1.0)
    plan = BucketPlan([1.0], [1.0])
    for bad in (("k",), (None,), (bytearray(b"k"),)):
        with pytest.raises(TypeError):
            t.take_all(bad, plan)
    with pytest.raises(TypeError):
        t.take_all([b"k"], plan)


def test_table_sizes():
    assert TokenBucketTable(1, shared=False).nslots == WAYS
    assert TokenBucketTable(1000, shared=False).nslots == 1024
    assert TokenBucketTable(1024, shared=False).nslots == 1024
    with pytest.raises(ValueError):
        TokenBucketTable(1 << 30, shared=False)


# ---------------------------------------------------------------------------- take_all

def test_take_all_is_all_or_nothing():
    t = TokenBucketTable(1024, shared=False)
    plan = BucketPlan([10.0, 1.0], [10.0, 2.0])
    keys = (b"per-second", b"per-minute")
    assert t.take_all(keys, plan, 1.0, T0).allowed
    r = t.take_all(keys, plan, 1.0, T0)
    assert r.allowed and r.index == 1 and r.remaining == 0.0
    r = t.take_all(keys, plan, 1.0, T0)
    assert not r.allowed and r.index == 1 and r.retry_after_s == pytest.approx(1.0)
    # The refused request took nothing from the first limit.
    assert t.peek(b"per-second", 10.0, 10.0, T0) == pytest.approx(8.0)


def test_take_all_reports_the_denial_that_frees_last():
    t = TokenBucketTable(1024, shared=False)
    plan = BucketPlan([1.0, 0.1, 1.0], [1.0, 1.0, 5.0])
    keys = (b"a", b"b", b"c")
    assert t.take_all(keys, plan, 1.0, T0).allowed
    r = t.take_all(keys, plan, 1.0, T0)
    assert not r.allowed and r.index == 1 and r.retry_after_s == pytest.approx(10.0)


def test_take_all_cost_scales_and_min_needs():
    # Entry 1 counts AI tokens: charged afterwards by debit(), admitted while not exhausted.
    t = TokenBucketTable(1024, shared=False)
    plan = BucketPlan([1.0, 100.0], [10.0, 1000.0], cost_scales=[1.0, 0.0], min_needs=[0.0, 1.0])
    keys = (b"req", b"tok")
    r = t.take_all(keys, plan, 1.0, T0)
    assert r.allowed and t.peek(b"tok", 100.0, 1000.0, T0) == 1000.0
    t.debit(b"tok", 100.0, 1000.0, 1500.0, T0)
    r = t.take_all(keys, plan, 1.0, T0 + SEC)
    assert not r.allowed and r.index == 1 and r.retry_after_s == pytest.approx(4.01)
    assert t.peek(b"req", 1.0, 10.0, T0 + SEC) == 10.0      # nothing taken from the other
    assert t.take_all(keys, plan, 1.0, T0 + 7 * SEC).allowed


def test_take_all_many_keys_same_set():
    # Every key of a full plan, all new: all of them must get a slot even in a one-set table.
    t = TokenBucketTable(WAYS, shared=False)
    plan = BucketPlan([1.0] * MAX_KEYS, [3.0] * MAX_KEYS)
    keys = tuple(b"k%d" % i for i in range(MAX_KEYS))
    for _ in range(3):
        assert t.take_all(keys, plan, 1.0, T0).allowed
    assert not t.take_all(keys, plan, 1.0, T0).allowed
    for k in keys:
        assert t.peek(k, 1.0, 3.0, T0) == 0.0


def test_plan_validation():
    with pytest.raises(ValueError):
        BucketPlan([], [])
    with pytest.raises(ValueError):
        BucketPlan([1.0] * (MAX_KEYS + 1), [1.0] * (MAX_KEYS + 1))
    with pytest.raises(ValueError):
        BucketPlan([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        BucketPlan([0.0], [1.0])
    with pytest.raises(ValueError):
        BucketPlan([1.0], [1.0], cost_scales=[-1.0])
    t = TokenBucketTable(1024, shared=False)
    with pytest.raises(ValueError):
        t.take_all((b"a", b"b"), BucketPlan([1.0], [1.0]))
    with pytest.raises(ValueError):
        t.take_all((b"a",), BucketPlan([1.0], [1.0]), -1.0)


# ---------------------------------------------------------------------------- bounded memory

def test_flood_of_new_keys_is_never_denied_and_memory_stays_fixed():
    t = TokenBucketTable(256, shared=False)
    size = t.size_bytes
    for i in range(20_000):
        r = t.take(b"flood-%d" % i, 10.0, 10.0, 1.0, T0 + i)
        assert r.allowed, i           # a key seen for the first time always has a full bucket
    s = t.stats(T0 + 20_000)
    assert s["used"] <= 256 and t.size_bytes == size
    assert s["evictions"] > 0


def test_flood_cannot_evict_a_limited_key_while_the_flood_refills_sooner():
    # Per-IP limit 10/s: the victim has emptied its bucket (full again in 1 s); a flood of
    # one-request keys leaves buckets at 9/10 (full again in 0.1 s). Only flood buckets are
    # ever overwritten, so the victim stays limited.
    t = TokenBucketTable(64, shared=False)
    for _ in range(10):
        assert t.take(b"victim", 10.0, 10.0, 1.0, T0).allowed
    for i in range(5_000):
        t.take(b"flood-%d" % i, 10.0, 10.0, 1.0, T0 + 1_000 * i)   # within 5 ms
        assert t.stats(T0)["used"] <= 64
    assert not t.take(b"victim", 10.0, 10.0, 1.0, T0 + 5 * 1_000_000).allowed


def test_full_buckets_are_reused_before_any_eviction():
    t = TokenBucketTable(WAYS, shared=False)        # a single set
    for i in range(WAYS):
        t.take(b"old-%d" % i, 1000.0, 10.0, 1.0, T0)    # full again after 1 ms
    later = T0 + 2_000_000
    for i in range(WAYS):
        t.take(b"new-%d" % i, 1.0, 10.0, 1.0, later)
    assert t.stats(later)["evictions"] == 0
    # Now the set is full of below-capacity buckets: the next new key evicts one, the one
    # that would be full soonest.
    t.take(b"soonest", 1.0, 10.0, 9.0, later)     # would refill in 9 s: not chosen
    assert t.stats(later)["evictions"] == 1


# ---------------------------------------------------------------------------- differential

class RefBucket:
    """Independent model: one token bucket, same float operations."""

    def __init__(self, rate, burst):
        self.rate_ns = rate / 1e9
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = None

    def level(self, now):
        if self.stamp is None:
            return self.burst
        t = self.tokens
        if now - self.stamp > 0:
            t += (now - self.stamp) * self.rate_ns
        return min(t, self.burst)

    def take(self, now, cost):
        t = self.level(now)
        if t < cost:
            return False, t
        self.tokens, self.stamp = t - cost, now
        return True, t - cost

    def debit(self, now, amount):
        t = self.level(now) - amount
        self.tokens, self.stamp = t, now
        return t


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.01, 1e6),
    burst=st.floats(0.5, 1e6),
    ops=st.lists(st.tuples(st.integers(0, 3 * SEC), st.sampled_from(["take", "debit"]),
                           st.floats(0.0, 50.0)), max_size=60),
)
def test_matches_reference_model(rate, burst, ops):
    t = TokenBucketTable(64, shared=False)
    ref = RefBucket(rate, burst)
    now = T0
    for dt, op, amount in ops:
        now += dt
        if op == "take":
            ok, left = ref.take(now, amount)
            r = t.take(b"key", rate, burst, amount, now)
            assert r.allowed == ok
            assert r.tokens == pytest.approx(left, rel=1e-9, abs=1e-9)
        else:
            left = ref.debit(now, amount)
            r = t.debit(b"key", rate, burst, amount, now)
            assert r.tokens == pytest.approx(left, rel=1e-9, abs=1e-9)
        assert t.peek(b"key", rate, burst, now) == pytest.approx(ref.level(now), rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------- processes

def _in_children(n, fn):
    """Run fn(i) in n forked children released at the same moment; return what each wrote
    (8-byte ints)."""
    pipes, pids = [], []
    gate_r, gate_w = os.pipe()
    for i in range(n):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(rfd)
                os.close(gate_w)
                os.read(gate_r, 1)
                os.write(wfd, struct.pack("<q", fn(i)))
                code = 0
            finally:
                os._exit(code)
        os.close(wfd)
        pipes.append(rfd)
        pids.append(pid)
    os.close(gate_r)
    os.write(gate_w, b"x" * n)
    os.close(gate_w)
    out = []
    for pid, rfd in zip(pids, pipes):
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with os.fdopen(rfd, "rb") as f:
            out.append(struct.unpack("<q", f.read())[0])
    return out


def test_forked_processes_share_one_table_exactly():
    t = TokenBucketTable(1024)
    burst = 150_000.0

    def hammer(_):
        return sum(t.take(b"shared-key", 1e-6, burst).allowed for _ in range(100_000))

    counts = _in_children(2, hammer)
    assert sum(counts) == 150_000
    assert t.peek(b"shared-key", 1e-6, burst) < 1.0


def test_forked_processes_take_all_exactly():
    t = TokenBucketTable(1024)
    plan = BucketPlan([1e-6, 1e-6], [500.0, 800.0])

    def hammer(i):
        keys = (b"a", b"b") if i % 2 == 0 else (b"b", b"a")   # opposite lock order requests
        p = plan if i % 2 == 0 else BucketPlan([1e-6, 1e-6], [800.0, 500.0])
        return sum(t.take_all(keys, p).allowed for _ in range(1000))

    counts = _in_children(3, hammer)
    assert sum(counts) == 500
    assert t.peek(b"b", 1e-6, 800.0) == pytest.approx(300.0, abs=1e-3)


def test_private_table_is_not_shared():
    t = TokenBucketTable(1024, shared=False)
    counts = _in_children(2, lambda _: sum(t.take(b"k", 1e-6, 10.0).allowed for _ in range(20)))
    assert counts == [10, 10]


def test_lock_of_a_dead_process_is_taken_over():
    t = TokenBucketTable(1024)
    pid = os.fork()
    if pid == 0:
        try:
            t._hold_lock_for_test(b"k")
        finally:
            os._exit(0)          # dies holding the lock
    os.waitpid(pid, 0)
    # Would spin forever if the dead owner were not detected (pytest-timeout guards).
    assert t.take(b"k", 1.0, 1.0).allowed
    assert not t.take(b"k", 1e-6, 1.0).allowed


def test_header_value_bytes():
    t = TokenBucketTable(1024, shared=False)
    r = t.take(b"k", 0.5, 10.0, 2.5, T0)
    assert (r.remaining_b, r.reset_b, r.retry_after_b) == (b"7", b"5", b"1")
    r = t.take(b"k", 0.5, 10.0, 9.0, T0)
    assert not r.allowed
    assert (r.remaining_b, r.reset_b, r.retry_after_b) == (b"7", b"5", b"3")
    r = t.take(b"big", 1.0, 1e7, 1.0, T0)
    assert (r.remaining_b, r.reset_b) == (b"9999999", b"1")
    r = t.take(b"k", 0.5, 10.0, 11.0, T0)
    assert r.retry_after_b == b""
    r = t.debit(b"d", 1.0, 10.0, 50.0, T0)
    assert (r.remaining_b, r.reset_b) == (b"0", b"50")

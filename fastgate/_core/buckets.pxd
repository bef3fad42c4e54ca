# cython: language_level=3
from libc.stdint cimport uint32_t, uint64_t, int64_t

cdef enum:
    # Most limits one take_all() checks atomically (a route's local limits).
    FG_MAX_KEYS = 8
    # Slots per set: a key lives in exactly one set, so a probe touches at most this many
    # 64-byte slots (one lock, a few cache lines) whatever the load.
    FG_WAYS = 8


ctypedef struct fg_slot:
    uint64_t h1          # keyed 128-bit fingerprint of the key; h2 == 0 marks an empty slot
    uint64_t h2
    double tokens        # may be negative after debit() (usage charged after the fact)
    int64_t stamp_ns     # CLOCK_MONOTONIC time tokens were last brought up to date
    int64_t full_ns      # when the bucket is full again: from then on it equals no bucket
    uint64_t pad0
    uint64_t pad1
    uint64_t pad2


ctypedef struct fg_header:
    uint64_t magic
    uint64_t nslots
    uint64_t nsets
    uint64_t nstripes
    uint64_t k0          # SipHash key, random per table, shared by every process mapping it
    uint64_t k1
    uint64_t evictions   # non-full buckets overwritten because their set was full
    uint64_t pad0


cdef class TakeResult:
    cdef readonly bint allowed
    # Which key/limit the figures describe: when allowed, the one with the fewest tokens left;
    # when denied, the denying one that frees up last.
    cdef readonly int index
    cdef readonly double tokens          # tokens in that bucket (negative after a debit)
    cdef readonly double remaining       # max(tokens, 0)
    cdef readonly double reset_s         # seconds until that bucket is full again
    cdef readonly double retry_after_s   # 0 when allowed; inf when cost exceeds the burst

    cdef bytes _remaining_b(self)
    cdef bytes _reset_b(self)


cdef class BucketPlan:
    cdef readonly int n
    cdef double rate_per_s[FG_MAX_KEYS]
    cdef double rate_per_ns[FG_MAX_KEYS]
    cdef double burst[FG_MAX_KEYS]
    cdef double cost_scale[FG_MAX_KEYS]
    cdef double min_need[FG_MAX_KEYS]


cdef class TokenBucketTable:
    cdef char *base
    cdef size_t nbytes
    cdef fg_header *hdr
    cdef char *locks
    cdef fg_slot *slots
    cdef uint64_t set_mask
    cdef uint64_t stripe_mask
    cdef readonly bint shared

    cdef int _run(self, int n, const char **kp, Py_ssize_t *kl, const double *rate_ns,
                  const double *rate_s, const double *burst, const double *consume,
                  const double *need, int64_t now, bint force, TakeResult r) except -1
    cdef int _take(self, tuple keys, BucketPlan plan, double cost, int64_t now_ns,
                   TakeResult r) except -1

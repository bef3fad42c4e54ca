# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Token buckets in a fixed-size table that several processes can share.

``TokenBucketTable`` holds one token bucket per key: capacity ``burst``, refilled at
``rate_per_s`` tokens per second, lazily (a bucket is brought up to date when it is touched,
from CLOCK_MONOTONIC, which every process on the host shares). ``take()`` admits a cost if the
bucket holds at least that many tokens and then removes them; a denial removes nothing.
``take_all()`` does the same for up to ``FG_MAX_KEYS`` keys at once, all or nothing: either
every bucket had enough and all are charged, or none is.
``debit()`` / ``credit()`` move tokens whatever the bucket holds (usage known afterwards: an
AI reservation and its settlement), a credit never above ``burst``. ``window_add()`` keeps
fixed-window counters (AI budgets) in the same slots, see its docstring.

Memory is fixed when the table is made: an anonymous mapping (MAP_SHARED by default, so
workers forked afterwards see the same buckets) of ``nslots`` 64-byte slots, grouped into sets of
``FG_WAYS``; a key's keyed 128-bit SipHash picks its set and is stored as its fingerprint (the
key itself is never stored, so a long key costs nothing but hashing). The SipHash key is random
per table, so nobody can aim many keys at one set or make two keys share a bucket.

A full bucket is exactly the same as no bucket, and the table relies on it:
* a bucket that is full after an operation is not stored (a stored one is cleared);
* a new key takes an empty slot, or else a slot whose bucket has refilled to full by now;
* only when every slot of the set holds a bucket that is still below capacity is a real bucket
  lost: the one that will be full soonest is overwritten (counted in ``stats()['evictions']``).
  Its key starts again from a full bucket, so it may be admitted early by at most the tokens
  it was missing; a key is never denied because of another key. So a flood of distinct keys
  neither grows memory nor denies anybody wrongly; if the table is too small for the number of
  keys actively being limited, the cost is that the busiest-to-recover buckets are forgotten
  first. Size the table to at least twice the keys expected to be below capacity at once.

Processes serialise on one spinlock per stripe of sets (a word inside the mapping, GCC
``__atomic`` builtins). A lock holds the owner's pid, so if a process dies inside the critical
section (a few dozen nanoseconds, no Python code runs there) the others notice the dead owner
after about a millisecond of waiting and take the lock over.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact, \
    PyBytes_FromStringAndSize
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from libc.stdint cimport uint32_t, uint64_t, int64_t, INT64_MAX
from libc.math cimport INFINITY, ceil

import os as _os

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <errno.h>
    #include <sched.h>
    #include <signal.h>
    #include <time.h>
    #include <unistd.h>
    #include <pthread.h>
    #include <sys/mman.h>

    #define FG_MAGIC 0x3174656b63756246ULL  /* "Fbucket1" */
    #define FG_LOCK_STRIDE 64               /* one cache line per stripe lock */

    #define FG_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    #define FG_SIPROUND                                                          \\
        do {                                                                     \\
            v0 += v1; v1 = FG_ROTL(v1, 13); v1 ^= v0; v0 = FG_ROTL(v0, 32);      \\
            v2 += v3; v3 = FG_ROTL(v3, 16); v3 ^= v2;                            \\
            v0 += v3; v3 = FG_ROTL(v3, 21); v3 ^= v0;                            \\
            v2 += v1; v1 = FG_ROTL(v1, 17); v1 ^= v2; v2 = FG_ROTL(v2, 32);      \\
        } while (0)

    static inline uint64_t fg_load64le(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }

    /* SipHash-2-4 with 128-bit output (reference: Aumasson & Bernstein, veorq/SipHash). */
    static void fg_siphash128(const char *data, size_t len, uint64_t k0, uint64_t k1,
                              uint64_t *o1, uint64_t *o2) {
        const unsigned char *in = (const unsigned char *)data;
        const unsigned char *end = in + len - (len & 7);
        uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
        uint64_t v1 = 0x646f72616e646f6dULL ^ k1 ^ 0xee;
        uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
        uint64_t v3 = 0x7465646279746573ULL ^ k1;
        uint64_t b = ((uint64_t)len) << 56;
        for (; in != end; in += 8) {
            uint64_t m = fg_load64le(in);
            v3 ^= m; FG_SIPROUND; FG_SIPROUND; v0 ^= m;
        }
        switch (len & 7) {
            case 7: b |= ((uint64_t)in[6]) << 48; /* fall through */
            case 6: b |= ((uint64_t)in[5]) << 40; /* fall through */
            case 5: b |= ((uint64_t)in[4]) << 32; /* fall through */
            case 4: b |= ((uint64_t)in[3]) << 24; /* fall through */
            case 3: b |= ((uint64_t)in[2]) << 16; /* fall through */
            case 2: b |= ((uint64_t)in[1]) << 8;  /* fall through */
            case 1: b |= ((uint64_t)in[0]); break;
            case 0: break;
        }
        v3 ^= b; FG_SIPROUND; FG_SIPROUND; v0 ^= b;
        v2 ^= 0xee;
        FG_SIPROUND; FG_SIPROUND; FG_SIPROUND; FG_SIPROUND;
        *o1 = v0 ^ v1 ^ v2 ^ v3;
        v1 ^= 0xdd;
        FG_SIPROUND; FG_SIPROUND; FG_SIPROUND; FG_SIPROUND;
        *o2 = v0 ^ v1 ^ v2 ^ v3;
    }

    static inline int64_t fg_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
    }

    /* The lock word holds the owner's pid; getpid() is a real syscall, so cache it and
       refresh it in every forked child. */
    static uint32_t fg_pid = 0;
    static void fg_after_fork_child(void) { fg_pid = (uint32_t)getpid(); }
    static void fg_init_pid(void) {
        fg_pid = (uint32_t)getpid();
        pthread_atfork(NULL, NULL, fg_after_fork_child);
    }

    static inline void fg_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }

    static inline int fg_trylock(uint32_t *w) {
        uint32_t expected = 0;
        return __atomic_compare_exchange_n(w, &expected, fg_pid, 0,
                                           __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }

    static void fg_lock(uint32_t *w) {
        unsigned long spins = 0;
        for (;;) {
            uint32_t cur = __atomic_load_n(w, __ATOMIC_RELAXED);
            if (cur == 0) {
                if (__atomic_compare_exchange_n(w, &cur, fg_pid, 1,
                                                __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
                continue;
            }
            ++spins;
            if (spins < 128) { fg_cpu_relax(); continue; }
            /* The holder may be descheduled (2 cores, many processes): let it run. */
            sched_yield();
            if ((spins & 1023) == 0 && kill((pid_t)cur, 0) == -1 && errno == ESRCH) {
                /* Its owner died inside the critical section: take the lock over. */
                if (__atomic_compare_exchange_n(w, &cur, fg_pid, 0,
                                                __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
            }
        }
    }

    static inline void fg_unlock(uint32_t *w) { __atomic_store_n(w, 0, __ATOMIC_RELEASE); }

    static inline void fg_atomic_inc(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }

    static void *fg_map(size_t n, int shared) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                       (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    static void fg_unmap(void *p, size_t n) { munmap(p, n); }
    """
    uint64_t FG_MAGIC
    size_t FG_LOCK_STRIDE
    void fg_siphash128(const char *data, size_t len, uint64_t k0, uint64_t k1,
                       uint64_t *o1, uint64_t *o2) nogil
    int64_t fg_now_ns() nogil
    void fg_init_pid() nogil
    int fg_trylock(uint32_t *w) nogil
    void fg_lock(uint32_t *w) nogil
    void fg_unlock(uint32_t *w) nogil
    void fg_atomic_inc(uint64_t *p) nogil
    void *fg_map(size_t n, int shared) nogil
    void fg_unmap(void *p, size_t n) nogil

fg_init_pid()

MAX_KEYS = FG_MAX_KEYS
WAYS = FG_WAYS
DEFAULT_SLOTS = 1 << 16
MAX_SLOTS = 1 << 22          # 256 MiB of address space; pages are only used once touched
_MAX_STRIPES = 256


def monotonic_ns():
    """The clock buckets run on (CLOCK_MONOTONIC, shared by all processes of the host)."""
    return fg_now_ns()


def _siphash128(bytes key not None, bytes data not None):
    """SipHash-2-4-128 of ``data`` under the 16-byte ``key`` (exposed for tests)."""
    if PyBytes_GET_SIZE(key) != 16:
        raise ValueError("key must be 16 bytes")
    cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
    cdef uint64_t k0 = 0, k1 = 0, o1, o2
    cdef int i
    for i in range(8):
        k0 |= (<uint64_t>k[i]) << (8 * i)
        k1 |= (<uint64_t>k[8 + i]) << (8 * i)
    fg_siphash128(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data), k0, k1, &o1, &o2)
    return o1.to_bytes(8, "little") + o2.to_bytes(8, "little")


cdef inline bint _finite_pos(double x) noexcept:
    return x > 0.0 and x < INFINITY     # False for NaN too


# Header values for RateLimit-Remaining / -Reset / Retry-After without formatting per request.
cdef tuple _SMALL_INTS = tuple([b"%d" % i for i in range(4096)])


cdef bytes _int_bytes(double v):
    """``b"%d" % int(v)``, written here: header figures are made per request."""
    cdef long long n = <long long>v
    cdef char buf[24]
    cdef int i = 24
    cdef bint neg = n < 0
    cdef unsigned long long u
    if 0 <= n < 4096:
        return <bytes>PyTuple_GET_ITEM(_SMALL_INTS, n)
    u = <unsigned long long>(-(n + 1)) + 1 if neg else <unsigned long long>n
    while True:
        i -= 1
        buf[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if neg:
        i -= 1
        buf[i] = 45
    return PyBytes_FromStringAndSize(buf + i, 24 - i)


@cython.final
@cython.freelist(32)
cdef class TakeResult:
    cdef bytes _remaining_b(self):
        return _int_bytes(self.remaining if self.remaining < 9.0e18 else 9.0e18)

    cdef bytes _reset_b(self):
        return _int_bytes(ceil(self.reset_s) if self.reset_s < 9.0e18 else 9.0e18)

    @property
    def remaining_b(self):
        """Whole tokens left, as ASCII bytes (RateLimit-Remaining)."""
        return self._remaining_b()

    @property
    def reset_b(self):
        """Seconds until full, rounded up, as ASCII bytes (RateLimit-Reset)."""
        return self._reset_b()

    @property
    def retry_after_b(self):
        """Seconds to wait, rounded up, at least 1, as ASCII bytes (Retry-After); b"" when
        no wait can help (cost above the burst)."""
        if not self.retry_after_s < 9.0e18:
            return b""
        cdef double r = ceil(self.retry_after_s)
        return _int_bytes(r if r >= 1.0 else 1.0)

    def __repr__(self):
        return (f"TakeResult(allowed={self.allowed}, index={self.index}, "
                f"remaining={self.remaining:.3f}, reset_s={self.reset_s:.3f}, "
                f"retry_after_s={self.retry_after_s:.3f})")


@cython.final
cdef class BucketPlan:
    """Rates and capacities of the limits one ``take_all()`` checks, compiled once per route.

    Entry ``i`` charges ``cost * cost_scales[i]`` and admits only if the bucket holds at least
    ``max(that, min_needs[i])``. Request limits use scale 1, need 0. Limits charged after the
    fact (AI tokens, via ``debit()``) use scale 0, need 1: admitted while not exhausted.
    """

    def __init__(self, rates_per_s, bursts, cost_scales=None, min_needs=None):
        rates = [float(x) for x in rates_per_s]
        caps = [float(x) for x in bursts]
        scales = [1.0] * len(rates) if cost_scales is None else [float(x) for x in cost_scales]
        needs = [0.0] * len(rates) if min_needs is None else [float(x) for x in min_needs]
        if not (len(rates) == len(caps) == len(scales) == len(needs)):
            raise ValueError("rates, bursts, cost_scales and min_needs differ in length")
        if not 1 <= len(rates) <= FG_MAX_KEYS:
            raise ValueError(f"a plan holds 1..{FG_MAX_KEYS} limits, not {len(rates)}")
        cdef int i
        for i in range(len(rates)):
            if not _finite_pos(rates[i]) or not _finite_pos(caps[i]):
                raise ValueError("rates and bursts must be finite and > 0")
            if not (0.0 <= scales[i] < INFINITY) or not (0.0 <= needs[i] < INFINITY):
                raise ValueError("cost_scales and min_needs must be finite and >= 0")
            self.rate_per_s[i] = rates[i]
            self.rate_per_ns[i] = rates[i] / 1e9
            self.burst[i] = caps[i]
            self.cost_scale[i] = scales[i]
            self.min_need[i] = needs[i]
        self.n = len(rates)


cdef inline uint32_t *_lock_at(char *locks, uint64_t stripe) noexcept nogil:
    return <uint32_t *>(locks + stripe * FG_LOCK_STRIDE)


cdef inline fg_slot *_find(fg_slot *set0, uint64_t h1, uint64_t h2) noexcept nogil:
    cdef int w
    for w in range(FG_WAYS):
        if set0[w].h2 == h2 and set0[w].h1 == h1:
            return &set0[w]
    return NULL


cdef inline bint _pinned(fg_slot *s, fg_slot **pins, int npins) noexcept nogil:
    cdef int j
    for j in range(npins):
        if pins[j] == s:
            return True
    return False


cdef fg_slot *_victim(fg_header *hdr, fg_slot *set0, int64_t now, fg_slot **pins,
                      int npins) noexcept nogil:
    cdef fg_slot *best = NULL
    cdef int64_t best_full = INT64_MAX
    cdef fg_slot *s
    cdef int w
    for w in range(FG_WAYS):
        s = &set0[w]
        if _pinned(s, pins, npins):
            continue
        if s.h2 == 0 or s.full_ns <= now:
            return s            # empty, or refilled to full by now: the same as empty
        if best == NULL or s.full_ns < best_full:
            best = s
            best_full = s.full_ns
    if best != NULL:
        fg_atomic_inc(&hdr.evictions)
    return best


cdef inline int64_t _full_at(int64_t now, double tokens, double burst, double rate_ns) noexcept nogil:
    cdef double d = (burst - tokens) / rate_ns
    if d >= 9.0e18:
        return INT64_MAX
    return now + <int64_t>d + 1


cdef inline void memmove_u64(uint64_t *dst, uint64_t *src, int count) noexcept nogil:
    # Overlapping shift right by one within a tiny array (count < FG_MAX_KEYS).
    cdef int i = count - 1
    while i >= 0:
        dst[i] = src[i]
        i -= 1


@cython.final
cdef class TokenBucketTable:
    """``TokenBucketTable(nslots=65536, shared=True)``: see the module docstring."""

    def __cinit__(self, nslots=DEFAULT_SLOTS, shared=True):
        self.base = NULL
        cdef uint64_t want = <uint64_t>max(int(nslots), FG_WAYS)
        if want > MAX_SLOTS:
            raise ValueError(f"nslots above {MAX_SLOTS}")
        cdef uint64_t n = FG_WAYS
        while n < want:
            n <<= 1
        cdef uint64_t nsets = n // FG_WAYS
        cdef uint64_t nstripes = nsets if nsets < _MAX_STRIPES else _MAX_STRIPES
        self.nbytes = sizeof(fg_header) + nstripes * FG_LOCK_STRIDE + n * sizeof(fg_slot)
        self.shared = bool(shared)
        self.base = <char *>fg_map(self.nbytes, self.shared)
        if self.base == NULL:
            raise MemoryError(f"mmap of {self.nbytes} bytes failed")
        # The mapping arrives zeroed: every lock free, every slot empty.
        self.hdr = <fg_header *>self.base
        self.locks = self.base + sizeof(fg_header)
        self.slots = <fg_slot *>(self.locks + nstripes * FG_LOCK_STRIDE)
        self.set_mask = nsets - 1
        self.stripe_mask = nstripes - 1
        seed = _os.urandom(16)
        self.hdr.k0 = int.from_bytes(seed[:8], "little")
        self.hdr.k1 = int.from_bytes(seed[8:], "little")
        self.hdr.nslots = n
        self.hdr.nsets = nsets
        self.hdr.nstripes = nstripes
        self.hdr.magic = FG_MAGIC

    def __dealloc__(self):
        # Unmaps this process's view only; other processes keep theirs.
        if self.base != NULL:
            fg_unmap(self.base, self.nbytes)
            self.base = NULL

    @property
    def nslots(self):
        return self.hdr.nslots

    @property
    def size_bytes(self):
        return self.nbytes

    cdef int _run(self, int n, const char **kp, Py_ssize_t *kl, const double *rate_ns,
                  const double *rate_s, const double *burst, const double *consume,
                  const double *need, int64_t now, bint force, TakeResult r) except -1:
        cdef uint64_t h1[FG_MAX_KEYS]
        cdef uint64_t h2[FG_MAX_KEYS]
        cdef uint64_t setno[FG_MAX_KEYS]
        cdef uint64_t stripes[FG_MAX_KEYS]
        cdef fg_slot *found[FG_MAX_KEYS]
        cdef double tok[FG_MAX_KEYS]
        cdef int i, j, nst = 0
        cdef uint64_t s
        cdef fg_slot *slot
        cdef double t
        cdef int64_t el
        cdef bint ok = True
        cdef fg_header *hdr = self.hdr

        for i in range(n):
            fg_siphash128(kp[i], <size_t>kl[i], hdr.k0, hdr.k1, &h1[i], &h2[i])
            if h2[i] == 0:
                h2[i] = 1       # 0 marks an empty slot
            setno[i] = h1[i] & self.set_mask
            # Stripes are locked in ascending order (no deadlock between processes), once each.
            s = setno[i] & self.stripe_mask
            j = nst
            while j > 0 and stripes[j - 1] > s:
                j -= 1
            if j == 0 or stripes[j - 1] != s:
                if j < nst:
                    memmove_u64(&stripes[j + 1], &stripes[j], nst - j)
                stripes[j] = s
                nst += 1

        for j in range(nst):
            fg_lock(_lock_at(self.locks, stripes[j]))

        for i in range(n):
            slot = _find(&self.slots[setno[i] * FG_WAYS], h1[i], h2[i])
            found[i] = slot
            if slot != NULL:
                t = slot.tokens
                el = now - slot.stamp_ns
                if el > 0:
                    t += <double>el * rate_ns[i]
                if t > burst[i]:
                    t = burst[i]   # also when a reload lowered the burst
            else:
                t = burst[i]
            tok[i] = t
            if not force and t < need[i]:
                ok = False

        if ok:
            for i in range(n):
                t = tok[i] - consume[i]
                tok[i] = t
                slot = found[i]
                if t >= burst[i]:
                    if slot != NULL:
                        slot.h2 = 0       # full again: forget it, the slot is free
                    continue
                if slot == NULL:
                    slot = _victim(hdr, &self.slots[setno[i] * FG_WAYS], now, found, n)
                    if slot == NULL:
                        continue          # unreachable: n <= FG_WAYS leaves one slot unpinned
                    slot.h1 = h1[i]
                    slot.h2 = h2[i]
                    found[i] = slot
                slot.tokens = t
                slot.stamp_ns = now
                slot.full_ns = _full_at(now, t, burst[i], rate_ns[i])

        j = nst
        while j > 0:
            j -= 1
            fg_unlock(_lock_at(self.locks, stripes[j]))

        # Figures for the RateLimit-* headers.
        cdef int pick = -1
        cdef double best = 0.0, ra
        r.allowed = ok
        r.retry_after_s = 0.0
        if ok:
            for i in range(n):
                if pick < 0 or tok[i] < best:
                    pick = i
                    best = tok[i]
        else:
            for i in range(n):
                if tok[i] < need[i]:
                    ra = INFINITY if need[i] > burst[i] else (need[i] - tok[i]) / rate_s[i]
                    if pick < 0 or ra > best:
                        pick = i
                        best = ra
            r.retry_after_s = best
        r.index = pick
        if pick >= 0:
            t = tok[pick]
            r.tokens = t
            r.remaining = t if t > 0.0 else 0.0
            r.reset_s = (burst[pick] - t) / rate_s[pick]
            if r.reset_s < 0.0:
                r.reset_s = 0.0
        else:
            r.tokens = INFINITY
            r.remaining = INFINITY
            r.reset_s = 0.0
        return 0

    def take(self, bytes key not None, double rate_per_s, double burst, double cost=1.0,
             int64_t now_ns=-1):
        """Admit ``cost`` tokens from ``key``'s bucket if it holds them; returns a TakeResult."""
        if not _finite_pos(rate_per_s) or not _finite_pos(burst) or not (0.0 <= cost < INFINITY):
            raise ValueError("rate and burst must be finite and > 0, cost finite and >= 0")
        cdef const char *kp = PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        cdef double rate_ns = rate_per_s / 1e9
        cdef TakeResult r = TakeResult.__new__(TakeResult)
        if now_ns < 0:
            now_ns = fg_now_ns()
        self._run(1, &kp, &kl, &rate_ns, &rate_per_s, &burst, &cost, &cost, now_ns, False, r)
        return r

    def debit(self, bytes key not None, double rate_per_s, double burst, double amount,
              int64_t now_ns=-1):
        """Remove ``amount`` tokens whatever the bucket holds (usage known only afterwards,
        e.g. AI tokens); the bucket may go negative and later takes wait for it to refill."""
        if not _finite_pos(rate_per_s) or not _finite_pos(burst) or not (0.0 <= amount < INFINITY):
            raise ValueError("rate and burst must be finite and > 0, amount finite and >= 0")
        cdef const char *kp = PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        cdef double rate_ns = rate_per_s / 1e9
        cdef double zero = 0.0
        cdef TakeResult r = TakeResult.__new__(TakeResult)
        if now_ns < 0:
            now_ns = fg_now_ns()
        self._run(1, &kp, &kl, &rate_ns, &rate_per_s, &burst, &amount, &zero, now_ns, True, r)
        return r

    def credit(self, bytes key not None, double rate_per_s, double burst, double amount,
               int64_t now_ns=-1):
        """Give ``amount`` tokens back to ``key``'s bucket (an AI reservation that proved too
        large), never above ``burst``: a bucket credited to capacity is full, so it is not
        stored at all."""
        if not _finite_pos(rate_per_s) or not _finite_pos(burst) or not (0.0 <= amount < INFINITY):
            raise ValueError("rate and burst must be finite and > 0, amount finite and >= 0")
        cdef const char *kp = PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        cdef double rate_ns = rate_per_s / 1e9
        cdef double give = -amount
        cdef double zero = 0.0
        cdef TakeResult r = TakeResult.__new__(TakeResult)
        if now_ns < 0:
            now_ns = fg_now_ns()
        self._run(1, &kp, &kl, &rate_ns, &rate_per_s, &burst, &give, &zero, now_ns, True, r)
        return r

    def window_add(self, bytes key not None, double amount, int64_t expires_ns,
                   int64_t now_ns=-1):
        """A fixed-window counter (AI budgets): add ``amount`` (negative to take some back;
        0 to read) to ``key``'s counter and return its new total, never below 0.

        The counter lives in a slot like a bucket: its value in ``tokens``, its expiry
        (CLOCK_MONOTONIC ns) in ``full_ns``. From ``expires_ns`` on it equals no counter (reads
        0, its slot is free), exactly as a full bucket equals no bucket, so counters of past
        windows cost nothing. Callers put the window in the key; counters live in the same
        sets as buckets and may be evicted under the same rule (the one that expires soonest
        goes first, so a counter of a long window outlives buckets that refill sooner; an
        evicted counter restarts at 0, counted in ``stats()['evictions']``). A read of a
        missing counter stores nothing."""
        if not (-INFINITY < amount < INFINITY):
            raise ValueError("amount must be finite")
        if now_ns < 0:
            now_ns = fg_now_ns()
        cdef uint64_t h1, h2, setno
        cdef fg_header *hdr = self.hdr
        fg_siphash128(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key),
                      hdr.k0, hdr.k1, &h1, &h2)
        if h2 == 0:
            h2 = 1
        setno = h1 & self.set_mask
        cdef fg_slot *set0 = &self.slots[setno * FG_WAYS]
        cdef uint32_t *lock = _lock_at(self.locks, setno & self.stripe_mask)
        cdef fg_slot *slot
        cdef double total = 0.0
        fg_lock(lock)
        slot = _find(set0, h1, h2)
        if slot != NULL and slot.full_ns > now_ns:
            total = slot.tokens
        total += amount
        if total <= 0.0 or expires_ns <= now_ns:
            if total < 0.0:
                total = 0.0
            if slot != NULL:
                slot.h2 = 0        # nothing counted (or already over): the same as no counter
        elif amount != 0.0 or slot != NULL:
            if slot == NULL:
                slot = _victim(hdr, set0, now_ns, NULL, 0)
                slot.h1 = h1
                slot.h2 = h2
            slot.tokens = total
            slot.stamp_ns = now_ns
            slot.full_ns = expires_ns
        fg_unlock(lock)
        return total

    def peek(self, bytes key not None, double rate_per_s, double burst, int64_t now_ns=-1):
        """Tokens ``key``'s bucket holds now (may be negative after debit); changes nothing."""
        if not _finite_pos(rate_per_s) or not _finite_pos(burst):
            raise ValueError("rate and burst must be finite and > 0")
        cdef const char *kp = PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        cdef double rate_ns = rate_per_s / 1e9
        cdef double inf = INFINITY
        cdef TakeResult r = TakeResult.__new__(TakeResult)
        if now_ns < 0:
            now_ns = fg_now_ns()
        # A need no bucket can meet makes the run a pure read.
        self._run(1, &kp, &kl, &rate_ns, &rate_per_s, &burst, &inf, &inf, now_ns, False, r)
        return r.tokens

    def take_all(self, tuple keys not None, BucketPlan plan not None, double cost=1.0,
                 int64_t now_ns=-1):
        """``take()`` for ``keys[i]`` under ``plan`` entry ``i``, all or nothing.

        Keys must be distinct. The TakeResult's ``index`` says which entry the figures are for.
        """
        cdef TakeResult r = TakeResult.__new__(TakeResult)
        self._take(keys, plan, cost, now_ns, r)
        return r

    cdef int _take(self, tuple keys, BucketPlan plan, double cost, int64_t now_ns,
                   TakeResult r) except -1:
        """take_all() into ``r`` (compiled callers: fastgate/_core/limitcore.pyx)."""
        cdef int n = plan.n
        cdef Py_ssize_t nk = PyTuple_GET_SIZE(keys)
        if nk != n:
            raise ValueError(f"{nk} keys for a plan of {n}")
        if not (0.0 <= cost < INFINITY):
            raise ValueError("cost must be finite and >= 0")
        cdef const char *kp[FG_MAX_KEYS]
        cdef Py_ssize_t kl[FG_MAX_KEYS]
        cdef double consume[FG_MAX_KEYS]
        cdef double need[FG_MAX_KEYS]
        cdef object k
        cdef int i
        for i in range(n):
            k = <object>PyTuple_GET_ITEM(keys, i)
            if not PyBytes_CheckExact(k):
                raise TypeError("keys must be bytes")
            kp[i] = PyBytes_AS_STRING(k)
            kl[i] = PyBytes_GET_SIZE(k)
            consume[i] = cost * plan.cost_scale[i]
            need[i] = consume[i] if consume[i] > plan.min_need[i] else plan.min_need[i]
        if now_ns < 0:
            now_ns = fg_now_ns()
        return self._run(n, kp, kl, plan.rate_per_ns, plan.rate_per_s, plan.burst, consume, need,
                         now_ns, False, r)

    def stats(self, int64_t now_ns=-1):
        """Occupancy, for tests and diagnostics (scans the table: not for the request path)."""
        if now_ns < 0:
            now_ns = fg_now_ns()
        cdef uint64_t i, used = 0, below = 0
        for i in range(self.hdr.nslots):
            if self.slots[i].h2 != 0:
                used += 1
                if self.slots[i].full_ns > now_ns:
                    below += 1
        return {"nslots": self.hdr.nslots, "used": used, "below_capacity": below,
                "evictions": self.hdr.evictions, "bytes": self.nbytes}

    def _hold_lock_for_test(self, bytes key not None):
        """Take the stripe lock ``key`` lives under and keep it (tests of dead-owner recovery)."""
        cdef uint64_t h1, h2
        fg_siphash128(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key),
                      self.hdr.k0, self.hdr.k1, &h1, &h2)
        fg_lock(_lock_at(self.locks, (h1 & self.set_mask) & self.stripe_mask))

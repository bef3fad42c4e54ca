"""Processes the harness starts: CPU pinning, /proc accounting, and guaranteed teardown.

Every process is started in its own session so that it and all its children (nginx workers,
fastgate workers) can be signalled as one group, and is recorded in ``_STARTED`` so that
``stop_all()`` (called from a ``finally`` and from signal handlers) leaves nothing running.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_STARTED: list["Proc"] = []


def cpu_split() -> tuple[list[int] | None, list[int] | None, str]:
    """(load-side CPUs, gateway CPUs, note). None means: do not pin.

    The load side (load generator, upstream, harness) and the gateway get disjoint halves so
    that the gateway's CPU time is not inflated by cache and run-queue contention.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None, "no sched_setaffinity: nothing pinned"
    if len(cpus) < 2:
        return None, None, f"only {len(cpus)} CPU: nothing pinned"
    half = len(cpus) // 2
    load, gw = cpus[:half], cpus[half:]
    return load, gw, f"load side on CPU {_fmt(load)}, gateway on CPU {_fmt(gw)}"


def _fmt(cpus):
    return ",".join(str(c) for c in cpus)


def raise_nofile(want: int = 1 << 20) -> int:
    """Raise this process's soft RLIMIT_NOFILE (inherited by everything it starts)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


class Proc:
    """A started process (and its process group)."""

    def __init__(self, name, argv, *, cpus=None, log_path=None, stdin=None, stdout=None,
                 env=None, cwd=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        cpus = list(cpus) if cpus else None

        def _child_setup():  # in the child before exec; affinity is inherited by descendants
            if cpus:
                os.sched_setaffinity(0, cpus)
            # if the harness is SIGKILLed its finally never runs: the kernel sends SIGTERM
            _set_parent_death_signal(signal.SIGTERM)

        self.popen = subprocess.Popen(
            self.argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log, stderr=self._log,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=_child_setup,
        )
        self.pid = self.popen.pid
        _STARTED.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n=20) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 8192))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout=5.0):
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        pids = descendants(self.pid)
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children that left the group (setsid) or outlived the leader get the same treatment.
        deadline = time.monotonic() + timeout
        for pid in pids:
            if pid != self.pid:
                _signal_pid(pid, signal.SIGTERM)
        while time.monotonic() < deadline and any(_exists(p) for p in pids if p != self.pid):
            time.sleep(0.05)
        _signal_group(self.pid, signal.SIGKILL)
        for pid in pids:
            if pid != self.pid:
                _signal_pid(pid, signal.SIGKILL)
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        if self in _STARTED:
            _STARTED.remove(self)


def _load_prctl():
    # loaded in the parent: a child between fork and exec should not import anything
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None


_prctl = _load_prctl()


def _set_parent_death_signal(sig):
    if _prctl is not None:
        _prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; it costs nothing and its parent reaps it.
    st = _read_stat(pid)
    return st is not None and st[0] != "Z"


def stop_all():
    for p in list(reversed(_STARTED)):
        try:
            p.stop(timeout=3.0)
        except Exception:  # teardown must go on for the others
            pass


# --- /proc accounting -------------------------------------------------------------------

def _read_stat(pid):
    """Fields after the command name of /proc/PID/stat (index 0 = state), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2:].decode().split()


def descendants(root: int) -> list[int]:
    """root and every process below it (through PPid, so setsid children count too), plus
    any process still in root's process group (a child orphaned by a dead parent)."""
    children: dict[int, list[int]] = {}
    group = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(entry)
        if st is None:
            continue
        pid = int(entry)
        children.setdefault(int(st[1]), []).append(pid)
        if int(st[2]) == root:
            group.append(pid)
    out, todo = [], [root]
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    out.extend(p for p in group if p not in seen)
    return out


def cpu_ticks(pids) -> dict[int, int]:
    """utime+stime+cutime+cstime (clock ticks) of each pid: children reaped inside count too."""
    out = {}
    for pid in pids:
        st = _read_stat(pid)
        if st is not None:
            out[pid] = int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return out


def cpu_ns(pids) -> dict[tuple[int, int], tuple[int, int]]:
    """(on-CPU ns, ns spent runnable but waiting for a CPU) of every thread of pids, from
    /proc/PID/task/TID/schedstat. The wait shows how much other work shared the CPU.

    utime+stime in /proc/PID/stat come in clock ticks (10 ms): over a window where a gateway
    uses 0.5 s of CPU that is a 2-4% quantization error per sample, more than the differences
    worth measuring. schedstat is the same accounting (sum_exec_runtime) in nanoseconds.
    """
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
                out[(pid, int(tid))] = (int(fields[0]), int(fields[1]))
            except (OSError, ValueError, IndexError):
                pass
    return out


class CpuMeter:
    """CPU seconds used by a process tree between start() and stop().

    Two readings of the same thing: ``stat`` = utime+stime(+reaped children) of
    /proc/PID/stat in ticks, ``ns`` = per-thread schedstat in nanoseconds. A process or thread
    born inside the window counts from zero; one that dies inside it is lost by ``ns`` and
    kept by ``stat`` only when its parent in the tree reaps it.
    """

    def __init__(self, root_pids):
        self.roots = list(root_pids)
        self.before: dict[int, int] = {}
        self.before_ns: dict = {}

    def _pids(self):
        pids = []
        for r in self.roots:
            pids.extend(descendants(r))
        return pids

    def start(self):
        pids = self._pids()
        self.before = cpu_ticks(pids)
        self.before_ns = cpu_ns(pids)
        self.t0 = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """(cpu seconds, wall seconds); details of the last call in .last."""
        pids = self._pids()
        after_ns = cpu_ns(pids)
        after = cpu_ticks(pids)
        wall = time.monotonic() - self.t0
        ticks = sum(v - self.before.get(pid, 0) for pid, v in after.items())
        ns = sum(v[0] - self.before_ns.get(k, (0, 0))[0] for k, v in after_ns.items())
        wait = sum(v[1] - self.before_ns.get(k, (0, 0))[1] for k, v in after_ns.items())
        # the busiest thread (an event loop's) and how long it waited: for a multi-threaded
        # gateway the total wait includes its threads waiting for each other on one core
        busiest = max(after_ns, key=lambda k: after_ns[k][0] - self.before_ns.get(k, (0, 0))[0],
                      default=None)
        busiest_wait = (after_ns[busiest][1] - self.before_ns.get(busiest, (0, 0))[1]
                        if busiest is not None else None)
        stat_s = ticks / CLK_TCK
        ns_s = ns / 1e9
        # prefer the precise reading unless threads died in the window (then stat keeps them)
        use = ns_s if after_ns and ns_s >= stat_s - 2.5 * len(after) / CLK_TCK else stat_s
        self.last = {"cpu_s_stat": stat_s, "cpu_s_schedstat": ns_s if after_ns else None,
                     "runqueue_wait_s": wait / 1e9 if after_ns else None,
                     "busiest_thread_wait_s": (busiest_wait / 1e9
                                               if busiest_wait is not None else None),
                     "source": "schedstat" if use is ns_s else "stat"}
        return use, wall


def cpu_busy_snapshot():
    """{cpu index: (busy jiffies, total jiffies)} from /proc/stat: everything that ran there,
    other tenants of the machine included."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                parts = line.split()
                vals = [int(x) for x in parts[1:9]]
                idle = vals[3] + vals[4]
                out[int(parts[0][3:])] = (sum(vals) - idle, sum(vals))
    except OSError:
        pass
    return out


def cpu_busy_delta(before, after, cpus) -> float | None:
    """Fraction of the given CPUs that was busy between two snapshots."""
    busy = total = 0
    for c in cpus or ():
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return busy / total if total else None


def memory_kib(root: int) -> dict[str, int]:
    """Sum over the tree of VmHWM (peak) and VmRSS (now), in KiB."""
    hwm = rss = 0
    n = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                text = f.read()
        except OSError:
            continue
        n += 1
        for line in text.splitlines():
            if line.startswith(b"VmHWM:"):
                hwm += int(line.split()[1])
            elif line.startswith(b"VmRSS:"):
                rss += int(line.split()[1])
    return {"hwm_kib": hwm, "rss_kib": rss, "processes": n}

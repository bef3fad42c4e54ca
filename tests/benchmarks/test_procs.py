"""Process control of the harness: it must find, measure and stop whole process trees."""
import os
import sys
import time

from benchmarks import procs

# waits for GO, burns 0.3 s of CPU (process time, whatever the machine's load), says DONE
BURN = ("import os,sys,time\n"
        "while not os.path.exists(sys.argv[1]+'/go'): time.sleep(0.01)\n"
        "t=time.process_time()\n"
        "while time.process_time()-t<0.3: pass\n"
        "open(sys.argv[1]+'/done','w').close()\n"
        "time.sleep(60)")


def test_tree_is_found_measured_and_stopped(tmp_path):
    # a parent with a child that burns CPU, then both sleep
    code = (f"import subprocess,sys,time\n"
            f"subprocess.Popen([sys.executable,'-c',{BURN!r},{str(tmp_path)!r}])\n"
            f"time.sleep(60)")
    p = procs.Proc("tree", [sys.executable, "-c", code], log_path=str(tmp_path / "log"))
    try:
        deadline = time.monotonic() + 10
        while len(procs.descendants(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = procs.descendants(p.pid)
        assert len(pids) == 2 and pids[0] == p.pid
        meter = procs.CpuMeter([p.pid])
        meter.start()
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 30
        while not (tmp_path / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cpu, wall = meter.stop()
        assert 0.29 < cpu < 0.29 + wall          # the child's burn is counted
        assert meter.last["cpu_s_schedstat"] is not None
        assert abs(meter.last["cpu_s_stat"] - meter.last["cpu_s_schedstat"]) < 0.1
        mem = procs.memory_kib(p.pid)
        assert mem["processes"] == 2 and mem["hwm_kib"] >= mem["rss_kib"] > 0
    finally:
        p.stop(timeout=3)
    assert not any(procs._exists(pid) for pid in pids)
    assert p not in procs._STARTED


def test_cpu_split_gives_disjoint_halves():
    load, gw, note = procs.cpu_split()
    if len(os.sched_getaffinity(0)) < 2:
        assert load is None and gw is None
    else:
        assert load and gw and not set(load) & set(gw)
        assert set(load) | set(gw) == set(os.sched_getaffinity(0))
    assert note

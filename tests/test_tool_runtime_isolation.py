"""tool_runtime: sessions share nothing (issue #7, isolation classes), each containment proved before the attack.

Every test first checks, from the host, that the mechanism that contains the attack is in force in that session
(its own mount/IPC namespace, the seccomp filter loaded, the view in place), then runs the hostile cell, then
checks the host: nothing of a closed session is left.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tool_runtime import SessionPool, limits

from .runtime_helpers import value

ROOT = Path(__file__).resolve().parent.parent
TMP_BYTES = 32 << 20
TMP_INODES = 4096


@pytest.fixture(scope="module")
def pool():
    with SessionPool(
        max_sessions=8, timeout=20.0, interrupt_grace=0.5, tmp_bytes=TMP_BYTES, tmp_inodes=TMP_INODES
    ) as p:
        yield p


@pytest.fixture
def two(pool):
    a, b = pool.open(), pool.open()
    yield a, b
    a.close()
    b.close()


def ns_of(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def require_private(session, other, *kinds: str) -> None:
    """Prove from the host that `session` has its own namespaces of these kinds (not the host's, not `other`'s)."""
    for kind in kinds:
        mine, theirs, host = ns_of(session.pid, kind), ns_of(other.pid, kind), os.readlink(f"/proc/self/ns/{kind}")
        if not (mine != theirs and mine != host):
            pytest.fail(f"session shares its {kind} namespace ({mine}; other {theirs}; host {host}): not attacking")


def require_seccomp(session) -> None:
    status = Path(f"/proc/{session.pid}/status").read_text()
    if "Seccomp:\t2" not in status:
        pytest.fail("the session has no seccomp filter loaded: not attacking")


# ------------------------------------------------------------------------------------------ 1. scratch space


def test_tmp_shm_home_are_private_to_each_session(pool, two):
    a, b = two
    require_private(a, b, "mnt")
    assert pool.info["isolation"]["private_tmp"] == ["/tmp", "/var/tmp", "/dev/shm"]
    names = ["/tmp/common", "/var/tmp/common", "/dev/shm/common"]
    # A plants world-writable files and a symlink at common names, as a trap for its neighbour.
    r = a.run(
        textwrap.dedent(f"""\
        import os
        for p in {names!r}:
            with open(p, 'w') as f:
                f.write('planted')
            os.chmod(p, 0o666)
        os.symlink('/tmp/common', '/tmp/link')
        open(os.path.expanduser('~/home-file'), 'w').write('a-home')
        print(sorted(os.listdir('/tmp')))""")
    )
    assert r.status == "ok", r.output
    # B sees none of it, and writing at the same names creates its own files.
    assert value(b, f"[__import__('os').path.lexists(p) for p in {names + ['/tmp/link']!r}]") == [False] * 4
    r = b.run("open('/tmp/common', 'w').write('b-data')\nprint(open('/tmp/common').read())")
    assert r.output == "b-data\n"
    assert a.run("print(open('/tmp/common').read())").output == "planted\n"
    assert value(b, "__import__('os').path.expanduser('~')") == b.workdir != a.workdir
    # Nothing of it on the host.
    for p in names + ["/tmp/link"]:
        assert not os.path.lexists(p) or "planted" not in Path(p).read_text(errors="replace")


def require_capped_tmpfs(session) -> None:
    """Prove the session's /tmp, /var/tmp, /dev/shm and work dir are one tmpfs with the pool's caps."""
    facts = value(
        session,
        "[[os.statvfs(p).f_blocks * os.statvfs(p).f_frsize, os.statvfs(p).f_files, "
        "os.stat(p).st_dev] for p in ('/tmp', '/var/tmp', '/dev/shm', '.')] "
        "if (os := __import__('os')) else 0",
    )
    if not all(f == [TMP_BYTES, TMP_INODES, facts[0][2]] for f in facts):
        pytest.fail(f"the session's scratch space is not one capped tmpfs ({facts}): not filling it")


def test_filling_the_tmpfs_hurts_only_the_filler(pool, two):
    a, b = two
    require_private(a, b, "mnt")
    require_capped_tmpfs(a)
    r = a.run(
        textwrap.dedent(f"""\
        import os
        n = 0
        try:
            with open('/dev/shm/fill', 'wb') as f:
                for _ in range({(TMP_BYTES >> 20) + 8}):
                    f.write(b'x' * (1 << 20)); n += 1
        except OSError as e:
            print('stopped', e.errno, n)""")
    )
    assert r.output.startswith("stopped 28 ") and int(r.output.split()[2]) <= TMP_BYTES >> 20, r.output
    r = a.run(
        f"import os\nn = 0\ntry:\n    for n in range({TMP_INODES + 64}):\n        os.mkdir(f'/tmp/d{{n}}')\n"
        "except OSError as e:\n    print('stopped', e.errno, n)"
    )
    assert r.output.startswith("stopped 28 ") and int(r.output.split()[2]) <= TMP_INODES, r.output
    # The neighbour can still write in all of its places.
    r = b.run("for p in ('/tmp/x', '/var/tmp/x', '/dev/shm/x', 'x'):\n    open(p, 'w').write('ok' * 1000)\nprint('ok')")
    assert r.output == "ok\n"


# ------------------------------------------------------------------------------------------ 2. IPC

SYSV_AND_MQ = textwrap.dedent("""\
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    shm = libc.shmget(0x7007, 64 << 20, 0o1666)     # IPC_CREAT | 0666
    msg = libc.msgget(0x7007, 0o1666)
    sem = libc.semget(0x7007, 1, 0o1666)
    mq = libc.mq_open(b'/rtiso-mq', os.O_CREAT | os.O_RDWR, 0o666, None)
    if mq >= 0:
        libc.mq_send(mq, b'hello', 5, 0)
    print(shm >= 0, msg >= 0, sem >= 0, mq >= 0)""")


def test_ipc_objects_are_private_and_die_with_the_session(pool, two):
    a, b = two
    require_private(a, b, "ipc")
    assert pool.info["isolation"]["ipc_namespace"]
    assert a.run(SYSV_AND_MQ).output == "True True True True\n"
    mine = "[str(0x7007) in open(f'/proc/sysvipc/{k}').read().split() for k in ('shm', 'msg', 'sem')]"
    assert value(a, mine) == [True, True, True]
    seen = value(b, "[open(f'/proc/sysvipc/{k}').read().count('\\n') for k in ('shm', 'msg', 'sem')]")
    assert seen == [1, 1, 1]  # headers only: B sees no segment, queue or semaphore of A
    r = b.run(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mq_open(b'/rtiso-mq', os.O_RDONLY, 0, None), ctypes.get_errno())"
    )
    assert r.output == "-1 2\n"  # ENOENT
    a.close()
    host = "".join(Path(f"/proc/sysvipc/{k}").read_text() for k in ("shm", "msg", "sem"))
    assert str(0x7007) not in host.split()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mq_open(b"/rtiso-mq", os.O_RDONLY, 0, None) == -1 and ctypes.get_errno() == 2


# ------------------------------------------------------------------------------------------ 3. uid reuse

WRITABLE_WALK = textwrap.dedent("""\
    import json, os
    out = []
    for top in [d for d in os.listdir('/') if d not in ('proc',)]:
        for dirpath, dirnames, filenames in os.walk('/' + top):
            if os.access(dirpath, os.W_OK):
                out.append([dirpath, os.stat(dirpath).st_dev == os.stat('/tmp').st_dev])
                dirnames[:] = []
    print(json.dumps(sorted(out)))""")


def test_uids_are_unique_and_nothing_persistent_is_writable(pool, two):
    a, b = two
    uid_a, uid_b = value(a, "__import__('os').getuid()"), value(b, "__import__('os').getuid()")
    assert uid_a != uid_b and 0 not in (uid_a, uid_b)
    capeff = value(a, "int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16)")
    assert capeff == 0
    if pool.info["isolation"]["user_namespace"]:
        # Without root: each session is the only uid of a user namespace of its own (the pool's uid outside).
        require_private(a, b, "user")
    else:
        # As root: the uid is that of no other process on the host than the session's own.
        owners: dict[int, set[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    owners.setdefault(os.stat(f"/proc/{entry}").st_uid, set()).add(int(entry))
                except OSError:
                    pass
        assert a.pid in owners[uid_a] and not owners[uid_a] & owners.get(uid_b, set())
    # Everything a session can write is its own tmpfs, which dies with it: an earlier session with the same
    # uid can have left nothing behind. The walk covers the session's whole filesystem.
    r = a.run(WRITABLE_WALK, timeout=120)
    writable = json.loads(r.output)
    assert {"/tmp", "/var/tmp", "/dev/shm"} <= {p for p, _ in writable}
    # Only the session's own tmpfs is writable (and, under a user namespace, the root of its own devpts
    # instance, where no file can be created).
    assert all(own for p, own in writable if p != "/dev/pts"), writable
    r = a.run("open('/dev/pts/x', 'w')")
    assert r.status == "error", r.output
    a.run("open('/tmp/mine', 'w').write('x'); open('mine', 'w').write('x')")
    workdir = a.workdir
    a.close()
    assert not os.path.lexists(workdir)
    for top in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run", pool.info["workdir_root"]):
        for entry in os.scandir(top) if os.path.isdir(top) else ():
            assert entry.stat(follow_symlinks=False).st_uid != uid_a, entry.path


# ------------------------------------------------------------------------------------------ 4. host view


def test_host_view_is_minimal_and_read_only(pool):
    with pool.open() as s, pool.open() as other:
        require_private(s, other, "mnt", "pid")
        root = pool.info["workdir_root"]
        template = pool.info["template_pid"]
        checks = {
            p: value(s, f"__import__('os').path.lexists({p!r})")
            for p in (
                "/run",
                "/var/run",
                "/run/lock",
                "/dev/log",
                "/run/dbus/system_bus_socket",
                "/var/run/docker.sock",
                "/sys",
                "/sys/fs/cgroup",
                "/home",
                "/root/.bashrc",
                f"{root}/template.log",
                f"/proc/{template}",
                "/etc/shadow",
                "/dev/mem",
                "/dev/kmsg",
                str(ROOT / "tests"),
                str(ROOT / ".git"),
            )
        }
        assert not any(checks.values()), checks
        # The host has these (the view hides them, it is not that they are missing).
        assert os.path.exists("/run") and os.path.exists(f"{root}/template.log") and os.path.exists("/sys/fs/cgroup")
        # /proc is the session's own PID namespace: its reaper, itself and its own children only.
        assert sorted(value(s, "[int(p) for p in __import__('os').listdir('/proc') if p.isdigit()]")) == [1, 2]
        assert value(s, "open('/proc/self/net/unix').read().count('\\n')") == 1  # header only: no host sockets
        assert value(s, "__import__('os').uname().nodename") == "session" != os.uname().nodename
        # PID 1 is the session's reaper, which is not chrooted: its root, cwd, memory, environment and what its
        # descriptors point to are out of reach (and all else under /proc/1: hidepid, test_tool_runtime_reaper.py).
        for code in (
            "__import__('os').listdir('/proc/1/root/')",
            "__import__('os').listdir('/proc/1/cwd/')",
            "open('/proc/1/mem', 'rb')",
            "open('/proc/1/environ', 'rb').read()",
            "open('/proc/1/maps').read()",
            "[__import__('os').readlink(f'/proc/1/fd/{n}') for n in range(3)]",
        ):
            r = s.run(code)
            assert r.status == "error" and "PermissionError" in r.output, (code, r.output)
        # No unix socket file anywhere in its view; nothing writable outside its own dirs (see above).
        socks = value(
            s,
            textwrap.dedent("""\
            [p for top in __import__('os').listdir('/') if top != 'proc'
             for d, _, fs in __import__('os').walk('/' + top) for p in [d + '/' + f for f in fs]
             if __import__('stat').S_ISSOCK(__import__('os').lstat(p).st_mode)]"""),
        )
        assert socks == []
        r = s.run("open('/usr/lib/probe', 'w')")
        assert r.status == "error" and ("Read-only file system" in r.output or "PermissionError" in r.output)
        # The interpreter and its packages work from the view.
        assert s.run("import email.mime.text, sqlite3, decimal, ssl\nprint('imports ok')").output == "imports ok\n"
        assert (
            s.run(
                "import subprocess\nprint(subprocess.run(['sh', '-c', 'echo hi'], capture_output=True).stdout)"
            ).output
            == "b'hi\\n'\n"
        )
        # IPython's `!cmd` runs on a pseudo-terminal: the session has a devpts instance of its own.
        assert s.run("!echo hi").output == "hi\n"
        assert value(s, "sorted(__import__('os').listdir('/dev/pts'))") == ["ptmx"]
    iso = pool.info["isolation"]
    assert iso["view"]["errors"] == {} and "/usr" in iso["view"]["shown"]


def test_view_errors_name_the_path_and_the_reason(tmp_path):
    hidden = tmp_path / "locked-site"
    hidden.mkdir()
    (hidden / "rtiso_probe_mod.py").write_text("X = 1\n")
    hidden.chmod(0o700)
    # A sys.path entry no other uid can read: pool.info names it, with the reason, and says what it cost.
    with SessionPool(
        max_sessions=1, preload=(), spare_sessions=0, extra_env={"PYTHONPATH": f"{ROOT}{os.pathsep}{hidden}"}
    ) as p:
        iso = p.info["isolation"]
        if iso["user_namespace"]:  # sessions are the pool's own uid on the host: they can read it
            assert str(hidden) in iso["view"]["shown"] and iso["view"]["errors"] == {}
            with p.open() as s:
                assert s.run("import rtiso_probe_mod\nrtiso_probe_mod.X").output == "1\n"
        else:  # as root: sessions keep their own uid (not root); pool.info names the path and the reason
            assert "mode 0700" in iso["view"]["errors"][str(hidden)] and iso["per_session_uid"]
            assert str(hidden) in iso["notes"]["view_errors"]
            with p.open() as s:
                assert "ModuleNotFoundError" in s.run("import rtiso_probe_mod").output
                r = s.run(f"__import__('os').listdir({str(hidden)!r})")
                assert "PermissionError" in r.output and str(hidden) in r.output, r.output


# ------------------------------------------------------------------------------------------ 5. kernel surface

ATTACKS = {
    "keyctl": "libc.syscall(nr('keyctl'), 0, -3, 0)",  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": "libc.syscall(nr('add_key'), b'user', b'k', b'v', 1, -3)",
    "unshare_user": "libc.unshare(0x10000000)",  # CLONE_NEWUSER
    "unshare_mount": "libc.unshare(0x00020000)",
    "clone_newuser": "libc.syscall(nr('clone'), 0x10000000 | 17, 0, 0, 0, 0)",
    "io_uring_setup": "libc.syscall(nr('io_uring_setup'), 8, ctypes.create_string_buffer(120))",
    "mount": "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
    "ptrace": "libc.ptrace(0, 0, 0, 0)",  # PTRACE_TRACEME
    "bpf": "libc.syscall(nr('bpf'), 0, 0, 0)",
    "perf_event_open": "libc.syscall(nr('perf_event_open'), 0, 0, -1, -1, 0)",
    "setns": "libc.setns(0, 0)",
    "init_module": "libc.syscall(nr('init_module'), 0, 0, 0)",
    "vsock": "libc.socket(40, 1, 0)",  # AF_VSOCK: the hypervisor's host
    "af_alg": "libc.socket(38, 5, 0)",
}


def test_syscall_filter_denies_the_kernel_surface(pool):
    with pool.open() as s:
        require_seccomp(s)
        assert pool.info["isolation"]["seccomp"]
        code = textwrap.dedent("""\
            import ctypes, json
            from tool_runtime.seccomp import syscall_number as nr
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            out = {}
            for name, call in ATTACKS.items():
                ctypes.set_errno(0)
                ret = eval(call)
                out[name] = [ret, ctypes.get_errno()]
            print(json.dumps(out))""").replace("ATTACKS", repr(ATTACKS))
        r = s.run(code)
        got = json.loads(r.output)
        denied = {name: v for name, v in got.items() if v[0] == -1 and v[1] in (1, 38, 97)}  # EPERM/ENOSYS/EAFNO
        assert denied.keys() == ATTACKS.keys(), got
        # What a notebook needs still works: threads, fork, subprocess, multiprocessing, ordinary sockets.
        r = s.run(
            "import socket\nfor f in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6): "
            "socket.socket(f, socket.SOCK_STREAM).close()\nprint(len(socket.if_nameindex()))"
        )
        assert r.output == "1\n", r.output
        r = s.run(
            "import threading, os, subprocess, multiprocessing as mp\nt = threading.Thread(target=print, "
            "args=('thread',)); t.start(); t.join()\npid = os.fork()\nif pid == 0: os._exit(3)\n"
            "print(os.waitpid(pid, 0)[1] >> 8, subprocess.run(['true']).returncode)\n"
            "with mp.get_context('fork').Pool(2) as p: print(p.map(abs, [-1, -2]))"
        )
        assert r.output == "thread\n3 0\n[1, 2]\n", r.output


KEYRING_PROBE = textwrap.dedent("""\
    import ctypes, json, sys
    sys.path.insert(0, {root!r})
    from tool_runtime.seccomp import syscall_number as nr
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # This process gets a session keyring of its own holding a secret, as under systemd or a login shell.
    assert libc.syscall(nr('keyctl'), 1, b'rtiso-parent') > 0                      # JOIN_SESSION_KEYRING
    key = libc.syscall(nr('add_key'), b'user', b'rtiso-secret', b'hunter2', 7, -3)  # into @s
    assert key > 0
    from tool_runtime import SessionPool, limits
    with SessionPool(max_sessions=1, preload=(), spare_sessions=0) as pool, pool.open() as s:
        status = open(f'/proc/{{s.pid}}/status').read()
        assert 'Seccomp:\\t2' in status, 'no filter: not attacking'
        cell = ("import ctypes\\nlibc = ctypes.CDLL(None, use_errno=True)\\nbuf = ctypes.create_string_buffer(64)\\n"
                f"print(libc.syscall({{nr('keyctl')}}, 11, {{key}}, buf, 64), ctypes.get_errno(), buf.value, "
                "'rtiso' in open('/proc/keys').read())")
        print(json.dumps(s.run(cell).output))
""")


def test_parent_keyring_is_out_of_reach(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(KEYRING_PROBE.format(root=str(ROOT)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == "-1 1 b'' False\n"  # KEYCTL_READ: EPERM; the key is not even listed


# ------------------------------------------------------------------------------------------ 6. cleanup

MANY_DIRS = textwrap.dedent("""\
    import os
    n = 0
    try:
        for n in range(100_000):
            os.mkdir(f'd{n}')
    except OSError as e:
        print('stopped', e.errno)
    d = 'deep'
    os.mkdir(d)
    os.chdir(d)
    for _ in range(1500):
        os.mkdir('x')
        os.chdir('x')
    os.chdir(os.path.expanduser('~'))
    print('made', n)""")


@pytest.mark.parametrize("end", ["close", "crash"])
def test_a_huge_tree_does_not_stall_the_pool(end):
    with SessionPool(max_sessions=4, timeout=60.0, tmp_inodes=200_000) as pool:
        witness = pool.open()
        witness.run("w = 'intact'")
        s = pool.open()
        assert pool.info["isolation"]["session_tmpfs"]["inodes"] == 200_000
        r = s.run(MANY_DIRS)
        assert r.output.startswith("made"), r.output
        workdir = s.workdir
        t = time.monotonic()
        if end == "close":
            s.close()
        else:
            r = s.run("import os; os._exit(1)")
            assert r.status == "crashed" and r.state_lost
        # The template answers at once: a neighbour's cell and a new session are not held up by the cleanup.
        assert witness.run("w", timeout=5).output == "'intact'\n"
        with pool.open(timeout=10) as fresh:
            assert fresh.run("1 + 1").output == "2\n"
        assert time.monotonic() - t < 10, "cleanup blocked the pool"  # the old inline cleanup took > 30 s
        if end == "close":
            assert not os.path.lexists(workdir)
        root = pool.info["workdir_root"]
    assert not os.path.exists(root)  # pool.close() did not raise and removed everything


# ------------------------------------------------------------------------------------------ 9. interpreter in /tmp


def _modules_for_ipython() -> list[Path]:
    """Top-level files and packages of this venv that `import IPython` loads (to copy into another venv)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""\
        import IPython, sys, site, json
        sp = [p for p in site.getsitepackages()]
        tops = set()
        for m in list(sys.modules.values()):
            f = getattr(m, '__file__', None) or ''
            for s in sp:
                if f.startswith(s + '/'):
                    tops.add(s + '/' + f[len(s) + 1:].split('/')[0])
        print(json.dumps(sorted(tops)))"""),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Path(p) for p in json.loads(out.stdout)]


def test_interpreter_in_a_venv_under_tmp(tmp_path_factory):
    venv = Path(tmp_path_factory.mktemp("venv-in-tmp")) / "venv"
    assert str(venv).startswith("/tmp/")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for src in _modules_for_ipython():
        dst = site / src.name
        if src.is_dir():
            subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        else:
            subprocess.run(["cp", str(src), str(dst)], check=True)
    (site / "rtiso_only_here.py").write_text("WHERE = __file__\n")
    python = str(venv / "bin" / "python")
    with SessionPool(max_sessions=2, preload=(), python=python) as pool:
        shown = pool.info["isolation"]["view"]["shown"]
        assert str(site) in shown or any(str(site).startswith(p + "/") for p in shown), shown
        with pool.open() as s:
            r = s.run(
                "import IPython, rtiso_only_here\nprint(IPython.__file__.startswith("
                f"{str(site)!r}), rtiso_only_here.WHERE)"
            )
            assert r.output == f"True {site}/rtiso_only_here.py\n", r.output
            # It is read-only to the session, and its /tmp is still private.
            r = s.run(f"open({str(site / 'evil.py')!r}, 'w')")
            assert r.status == "error"
            assert value(s, "sorted(__import__('os').listdir('/tmp'))") == [
                str(venv).split("/")[2],
                pool.info["workdir_root"].split("/")[2],
            ]


# ------------------------------------------------------------------------------------------ without root

AS_NOBODY = textwrap.dedent("""\
    # Run argv[1:] as nobody, in a mount namespace where root's 0700 home shows only the Python installation.
    import os, sys
    sys.path.insert(0, {root!r})
    from tool_runtime import limits
    limits.private_mount_namespace()
    keep = {{p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in {hidden!r}}}
    for p in {covers!r}:
        limits.mount("tmpfs", p, "tmpfs", 0, "mode=0755,size=1m")
    for p, fd in keep.items():
        os.makedirs(p, 0o755, exist_ok=True)
        limits.mount(f"/proc/self/fd/{{fd}}", p, None, limits.MS_BIND | limits.MS_REC)
    if {deny_userns!r}:  # a kernel that refuses unprivileged user namespaces, as some distributions do
        import errno, pyseccomp
        f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        f.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare")
        f.add_rule(pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, 1 << 28, 1 << 28))
        f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
        f.load()
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    os.execv(sys.argv[1], sys.argv[1:])
""")


def _as_nobody(
    tmp_path: Path,
    argv: list[str],
    *,
    deny_userns: bool = False,
    timeout: float = 600,
    files: dict[str, str] | None = None,
):
    """Run argv as nobody (with the interpreter and this checkout readable) in a fresh world-writable dir
    (where `files` are written first; "{base}" in argv is that dir)."""
    needed = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, str(ROOT))}
    covers, hidden = set(), set()
    for p in needed:  # directories on the way that nobody cannot enter (e.g. /root holding a pyenv)
        hit = limits.first_blocked(p)
        if hit:
            covers.add(hit[0])
            hidden.add(os.path.join(hit[0], hit[1]))
    script = tmp_path / "as_nobody.py"
    script.write_text(
        AS_NOBODY.format(root=str(ROOT), hidden=sorted(hidden), covers=sorted(covers), deny_userns=deny_userns)
    )
    base = Path(tempfile.mkdtemp(prefix="rtiso-nobody-"))  # tmp_path's parents are root's own (0700)
    base.chmod(0o777)
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "LANG": "C.UTF-8", "RTISO_BASE": str(base)}
    for name, text in (files or {}).items():
        (base / name).write_text(text)
    argv = [a.replace("{base}", str(base)) for a in argv]
    try:
        return subprocess.run(
            [sys.executable, str(script), *argv],
            cwd=str(base),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        # rm -rf, not shutil.rmtree: a session may have left a 1500-deep tree there (RecursionError), and the
        # pool's own background removal of it may still be running
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(base)], check=False)


def test_isolation_checks_hold_without_root(tmp_path):
    """The checks of this file, the hostile cells, the lifecycle and the reaper tests, re-run by an unprivileged user
    (nobody) in a subprocess: the pool gets the same isolation from user namespaces (a uid mapped per session
    instead of setuid), and survives its template being killed (then the process the pool started is a shim)."""
    if os.geteuid() != 0:
        pytest.skip("the suite already runs unprivileged: the other tests of this file are these checks")
    out = _as_nobody(
        tmp_path,
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-k",
            "not without_",
            str(Path(__file__)),
            str(Path(__file__).with_name("test_tool_runtime_hostile.py")),
            str(Path(__file__).with_name("test_tool_runtime.py")),
            str(Path(__file__).with_name("test_tool_runtime_reaper.py")),
        ],
    )
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-5000:] + out.stderr[-2000:]
    assert "skipped" not in out.stdout and "failed" not in out.stdout


DEGRADED = textwrap.dedent("""\
    import json, os, sys
    sys.path.insert(0, {root!r})
    from tool_runtime import SessionPool, limits
    with SessionPool(max_sessions=2, preload=(), workdir_root=os.environ["RTISO_BASE"]) as pool:
        iso = pool.info["isolation"]
        s = pool.open()
        r = s.run("import os\\nfor i in range(2000): os.mkdir(f'd{{i}}')\\n"
                  "for _ in range(1500): os.mkdir('x'); os.chdir('x')\\nos.getuid()")
        workdir = s.workdir
        s.close()
        root = pool.info["workdir_root"]
    print(json.dumps({{"iso": iso, "output": r.output, "root_left": os.path.exists(root),
                      "uid": os.getuid()}}))
""")


def test_without_user_namespaces_it_degrades_and_says_so(tmp_path):
    """Where the kernel refuses unprivileged user namespaces: sessions still run, pool.info says what is not
    in force and why, and a 1500-deep tree in a work dir on the host does not make pool.close() raise."""
    if os.geteuid() != 0:
        pytest.skip("this test switches to nobody itself; it runs when the suite runs as root (CI does)")
    out = _as_nobody(
        tmp_path,
        [sys.executable, "{base}/degraded.py"],
        deny_userns=True,
        timeout=300,
        files={"degraded.py": DEGRADED.format(root=str(ROOT))},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    iso = got["iso"]
    assert "user namespaces are not available" in iso["notes"]["user_namespace"]
    assert not iso["user_namespace"] and not iso["per_session_uid"] and iso["view"] is None
    assert not iso["pid_namespace"] and iso["private_tmp"] == [] and "pid_namespace" in iso["notes"]
    assert got["output"] == f"{got['uid']}\n" and not got["root_left"]

"""Start one workload inside its sandbox: ``python -I -S sandbox_exec.py [POLICY...] -- CMD...``.

Standalone on purpose (standard library only, started by path, not as ``nubis``'s module) so it
adds a few milliseconds, not nubis's import time, to every start. In order it:

1. when started as root with a ``uid``: drops every supplementary group, then gid and uid (the
   kernel clears all capabilities on the uid change); as root without a ``uid``: empties the
   capability bounding set and the capability sets (root's files stay root's, Landlock decides);
2. sets ``no_new_privs`` (no setuid binary can give privileges back);
3. restricts itself with Landlock: read (and execute) beneath ``ro``, full access beneath ``rw``,
   nothing else on the file system; with ABI ≥ 6 also no signals to, and no abstract unix socket
   connections with, processes outside this sandbox (``scope``);
4. ``execvp``'s the command, which inherits all of it (and cannot undo it).

The policy is options before ``--``: ``--ro PATH`` and ``--rw PATH`` (repeated), ``--uid N``,
``--gid N``, ``--scope signal|abstract_unix_socket`` (repeated), ``--abi-min N``, ``--pdeathsig N``
(after the uid change, which clears it: the workload gets signal N when the process that started it
ends, and the launcher exits at once if that one is already gone). Parsed by hand,
not with json or argparse, whose imports would cost more than the rest of the launcher. Any failure
exits 126 with one line on stderr and runs nothing: a workload never starts unsandboxed by accident.
"""

import ctypes
import os
import sys

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and arm64
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
CAPABILITY_VERSION_3 = 0x20080522

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
DIR_ONLY = sum(1 << i for i in (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13))  # read_dir, remove_*, make_*, refer
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
             5: (1 << 16) - 1}  # refer (2), truncate (3), ioctl_dev (5)
SCOPES = {"abstract_unix_socket": 1 << 0, "signal": 1 << 1}
READ = EXECUTE | READ_FILE | READ_DIR

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class SandboxError(Exception):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    result = _libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(0, int(result))


def drop_privileges(uid: int | None, gid: int | None) -> None:
    if os.geteuid() != 0:
        return
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid if gid is not None else uid, gid if gid is not None else uid,
                     gid if gid is not None else uid)
        os.setresuid(uid, uid, uid)
        return
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            break  # past the last capability this kernel knows
    header, data = _CapHeader(CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.syscall(126, ctypes.byref(header), ctypes.byref(data)), "capset")  # SYS_capset


def restrict(ro: list[str], rw: list[str], scope: list[str], abi_min: int) -> int:
    abi = landlock_abi()
    if abi < max(1, abi_min):
        raise SandboxError(f"Landlock ABI {abi} is below the {max(1, abi_min)} this sandbox needs")
    handled = FS_BY_ABI.get(abi, FS_BY_ABI[5])
    attr = _RulesetAttr(handled, 0, sum(SCOPES[s] for s in scope) if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _check(_libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                   ctypes.c_uint32(0)), "landlock_create_ruleset")
    for paths, access in ((ro, READ), (rw, handled)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # absent on this machine: nothing to allow
            try:
                allowed = access & handled
                if not os.path.isdir(path):
                    allowed &= ~DIR_ONLY
                rule = _PathBeneath(allowed, fd)
                _check(_libc.syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                                     ctypes.byref(rule), ctypes.c_uint32(0)), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(_libc.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
           "landlock_restrict_self")
    os.close(ruleset)
    return abi


def parse(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--name VALUE`` pairs up to ``--``, then the command."""
    policy: dict[str, list[str]] = {"ro": [], "rw": [], "uid": [], "gid": [], "scope": [], "abi-min": [],
                                     "pdeathsig": []}
    i = 0
    while i < len(args) and args[i] != "--":
        name = args[i].removeprefix("--")
        if name not in policy or i + 1 >= len(args):
            raise ValueError(f"bad policy option {args[i]!r}")
        policy[name].append(args[i + 1])
        i += 2
    if i >= len(args) - 1:
        raise ValueError("no command after '--'")
    return policy, args[i + 1:]


def main() -> int:
    parent = os.getppid()
    try:
        policy, argv = parse(sys.argv[1:])
        uid = int(policy["uid"][-1]) if policy["uid"] else None
        gid = int(policy["gid"][-1]) if policy["gid"] else uid
        drop_privileges(uid, gid)
        if policy["pdeathsig"]:
            signum = int(policy["pdeathsig"][-1])
            _check(_libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
            if os.getppid() != parent:
                raise SandboxError("the process that started it has ended")
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        abi_min = int(policy["abi-min"][-1]) if policy["abi-min"] else 1
        restrict(policy["ro"], policy["rw"], policy["scope"], abi_min)
    except (SandboxError, OSError, ValueError, KeyError) as exc:
        print(f"nubis sandbox: cannot start the workload sandboxed: {exc}", file=sys.stderr, flush=True)
        return 126
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"error: cannot run {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 127


if __name__ == "__main__":
    sys.exit(main())

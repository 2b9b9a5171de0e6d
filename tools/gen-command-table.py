#!/usr/bin/env python3
"""Generates protocol/src/command/table.rs from a live redis-server's COMMAND INFO.

Starts a throw-away redis-server on a free 127.0.0.1 port (no persistence), asks it for
`COMMAND INFO` and `INFO server`, stops it again (by pid, also on error) and writes the
command table: every command and subcommand with its arity, flags and key specs, dense
ids, and perfect hashes over the names for the proxy's lookup.

Usage:
    tools/gen-command-table.py                 # regenerate protocol/src/command/table.rs
    tools/gen-command-table.py --check         # exit 1 if the file is not up to date
    tools/gen-command-table.py --redis-server /path/to/redis-server

Python 3 standard library only. The output is run through `rustfmt --edition 2024`.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "protocol" / "src" / "command" / "table.rs"

# Command flags as COMMAND INFO reports them -> the const in protocol/src/command/mod.rs.
# Redis 7.0 does not report its internal flags (may_replicate, sentinel, ...).
COMMAND_FLAGS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "denyoom": "DENYOOM",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "blocking": "BLOCKING",
    "loading": "LOADING",
    "stale": "STALE",
    "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG",
    "asking": "ASKING",
    "fast": "FAST",
    "no_auth": "NO_AUTH",
    "no_async_loading": "NO_ASYNC_LOADING",
    "no_multi": "NO_MULTI",
    "movablekeys": "MOVABLEKEYS",
    "allow_busy": "ALLOW_BUSY",
    "no_mandatory_keys": "NO_MANDATORY_KEYS",
}

# Key-spec flags -> the const in mod.rs.
KEY_SPEC_FLAGS = {
    "RO": "KS_RO",
    "RW": "KS_RW",
    "OW": "KS_OW",
    "RM": "KS_RM",
    "access": "KS_ACCESS",
    "update": "KS_UPDATE",
    "insert": "KS_INSERT",
    "delete": "KS_DELETE",
    "not_key": "KS_NOT_KEY",
    "incomplete": "KS_INCOMPLETE",
    "variable_flags": "KS_VARIABLE_FLAGS",
}

# Perfect hash parameters; protocol/src/command/mod.rs computes the same functions.
P0 = 0xA076_1D64_78BD_642F
P1 = 0xE703_7ED1_A0B4_28DB
MIX = 0x9E37_79B1
BUCKET_BITS = 6
SLOT_BITS = 9
SUB_BUCKET_BITS = 5
SUB_SLOT_BITS = 8
MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF
EMPTY = 0xFFFF


class GenError(Exception):
    pass


# --------------------------------------------------------------------------- RESP client


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.file.close()
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise GenError("connection closed by redis-server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise GenError("redis-server replied with an error: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2].decode()
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise GenError("unexpected RESP line %r" % line)


# --------------------------------------------------------------------------- redis-server


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to this pid only
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query_redis(server):
    """Returns (version, COMMAND INFO reply) from a throw-away redis-server."""
    with tempfile.TemporaryDirectory(prefix="gen-command-table-") as tmp:
        for _attempt in range(5):
            port = free_port()
            log = os.path.join(tmp, "redis.log")
            proc = subprocess.Popen(
                [
                    server,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--dir", tmp,
                    "--logfile", log,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                conn = None
                deadline = time.monotonic() + 10
                while conn is None and proc.poll() is None and time.monotonic() < deadline:
                    try:
                        conn = Resp(port)
                    except OSError:
                        time.sleep(0.05)
                if conn is None:
                    continue  # port taken meanwhile, or slow start: try another port
                try:
                    if conn.call("PING") != "PONG":
                        raise GenError("redis-server did not answer PING")
                    info = conn.call("INFO", "server")
                    version = next(
                        (line.split(":", 1)[1].strip() for line in info.splitlines()
                         if line.startswith("redis_version:")),
                        None,
                    )
                    if version is None:
                        raise GenError("INFO server has no redis_version")
                    commands = conn.call("COMMAND", "INFO")
                    return version, commands
                finally:
                    conn.close()
            finally:
                stop(proc)
        raise GenError("could not start %s on a free port (see its log in a rerun)" % server)


# --------------------------------------------------------------------------- model


def pairs(flat):
    """A RESP2 map (flat [k, v, k, v, ...]) as a dict."""
    if not flat:
        return {}
    return dict(zip(flat[::2], flat[1::2]))


def rust_flags(names, table, what, cmd):
    out = []
    for name in names:
        if name not in table:
            raise GenError("%s: unknown %s %r (extend the tables in the generator and mod.rs)" % (cmd, what, name))
        out.append(table[name])
    # Keep the order of the tables above, for stable output.
    order = list(table.values())
    out.sort(key=order.index)
    return " | ".join(out) if out else "0"


def key_spec(cmd, raw):
    spec = pairs(raw)
    unknown = set(spec) - {"flags", "begin_search", "find_keys", "notes"}
    if unknown:
        raise GenError("%s: unexpected key-spec fields %s" % (cmd, sorted(unknown)))
    flags = rust_flags(spec["flags"], KEY_SPEC_FLAGS, "key-spec flag", cmd)

    bs = pairs(spec["begin_search"])
    bs_args = pairs(bs["spec"])
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % bs_args["index"]
    elif bs["type"] == "keyword":
        kw = bs_args["keyword"]
        if not kw.isascii() or '"' in kw or "\\" in kw:
            raise GenError("%s: keyword %r needs escaping" % (cmd, kw))
        begin = 'BeginSearch::Keyword { keyword: "%s", startfrom: %d }' % (kw, bs_args["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        raise GenError("%s: unknown begin_search type %r" % (cmd, bs["type"]))

    fk = pairs(spec["find_keys"])
    fk_args = pairs(fk["spec"])
    if fk["type"] == "range":
        find = "FindKeys::Range { lastkey: %d, step: %d, limit: %d }" % (
            fk_args["lastkey"], fk_args["keystep"], fk_args["limit"])
        if fk_args["keystep"] < 1 or fk_args["limit"] < 0 or (fk_args["limit"] and fk_args["lastkey"] != -1):
            raise GenError("%s: unexpected range %r" % (cmd, fk_args))
    elif fk["type"] == "keynum":
        find = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, step: %d }" % (
            fk_args["keynumidx"], fk_args["firstkey"], fk_args["keystep"])
        if fk_args["keystep"] < 1 or fk_args["keynumidx"] < 0 or fk_args["firstkey"] < 0:
            raise GenError("%s: unexpected keynum %r" % (cmd, fk_args))
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        raise GenError("%s: unknown find_keys type %r" % (cmd, fk["type"]))
    return "KeySpec { flags: %s, begin_search: %s, find_keys: %s }" % (flags, begin, find)


class Command:
    def __init__(self, raw, depth=0):
        if len(raw) != 10:
            raise GenError("COMMAND INFO entry with %d fields (Redis 7.0 has 10): %r" % (len(raw), raw[:1]))
        name, arity, flags, _first, _last, _step, _acl, _tips, specs, subs = raw
        if name != name.lower() or not all(c.isalnum() or c in "_-|" for c in name):
            raise GenError("unexpected command name %r" % name)
        self.name = name
        self.arity = arity
        self.flags = rust_flags(flags, COMMAND_FLAGS, "command flag", name)
        self.key_specs = [key_spec(name, s) for s in specs]
        if depth and subs:
            raise GenError("%s: nested subcommands are not supported" % name)
        self.subcommands = sorted((Command(s, depth + 1) for s in subs), key=lambda c: c.name)
        for s in self.subcommands:
            if not s.name.startswith(name + "|"):
                raise GenError("subcommand %r of %r" % (s.name, name))
        self.id = None

    def static_name(self):
        return self.name.upper().replace("-", "_") + "_SUBCOMMANDS"


# --------------------------------------------------------------------------- perfect hash


def fold_mul(a, b):
    r = a * b
    return (r & MASK64) ^ (r >> 64)


def load8(s, i):
    return int.from_bytes(s[i:i + 8], "little") | 0x2020_2020_2020_2020


def load4(s, i):
    return int.from_bytes(s[i:i + 4], "little") | 0x2020_2020


def name_hash(seed, name):
    """`hash_name` in mod.rs: ASCII case folded (b | 0x20), overlapping little-endian loads,
    folded 64x64->128 multiplies."""
    s = name.encode()
    n = len(s)
    h = seed ^ ((n * P0) & MASK64)
    if n == 0:
        a, b = 0, 0
    elif n <= 3:
        a, b = ((s[0] | 0x20) << 16) | ((s[n // 2] | 0x20) << 8) | (s[n - 1] | 0x20), 0
    elif n < 8:
        a, b = load4(s, 0), load4(s, n - 4)
    elif n <= 16:
        a, b = load8(s, 0), load8(s, n - 8)
    else:
        i = 0
        while n - i > 16:
            h = fold_mul(load8(s, i) ^ P1, load8(s, i + 8) ^ h)
            i += 16
        a, b = load8(s, n - 16), load8(s, n - 8)
    h = fold_mul(a ^ P1, b ^ h)
    return (h ^ (h >> 32)) & MASK32


def sub_seed(seed, container_id):
    return (seed + container_id + 1) & MASK64


def slot_of(h, disp, slot_bits):
    return (((h ^ disp) * MIX) & MASK32) >> (32 - slot_bits)


def displace(hashes, bucket_bits, slot_bits):
    """CHD: (displacements, slots) with slots[slot_of(h, disp[h >> (32 - bucket_bits)])] =
    index of h, or None if some bucket cannot be placed."""
    buckets = [[] for _ in range(1 << bucket_bits)]
    for i, h in enumerate(hashes):
        buckets[h >> (32 - bucket_bits)].append(i)
    order = sorted(range(len(buckets)), key=lambda b: (-len(buckets[b]), b))
    slots = [None] * (1 << slot_bits)
    disp = [0] * len(buckets)
    for b in order:
        members = buckets[b]
        if not members:
            continue
        for d in range(0, 1 << 16):
            taken = [slot_of(hashes[i], d, slot_bits) for i in members]
            if len(set(taken)) == len(taken) and all(slots[t] is None for t in taken):
                for i, t in zip(members, taken):
                    slots[t] = i
                disp[b] = d
                break
        else:
            return None
    return disp, slots


def perfect_hash(top_names, subs):
    """A seed and two CHD tables: over the top-level names, and over the subcommands
    (container id, name after `container|`), hashed with a seed that depends on the
    container."""
    for seed in range(1, 10_000):
        top = displace([name_hash(seed, n) for n in top_names], BUCKET_BITS, SLOT_BITS)
        if top is None:
            continue
        sub = displace([name_hash(sub_seed(seed, cid), n) for cid, n in subs],
                       SUB_BUCKET_BITS, SUB_SLOT_BITS)
        if sub is None:
            continue
        return seed, top, sub
    raise GenError("no perfect hash found")


# --------------------------------------------------------------------------- output


def render(version, commands):
    out = []
    w = out.append
    w("// generated by tools/gen-command-table.py from Redis %s COMMAND INFO; do not edit" % version)
    w("")
    w("//! The Redis command table: every command and subcommand with its arity, flags and key specs.")
    w("//! Generated data, one entry per command, so its length is Redis's command list: not split.")
    w("")
    w("use super::*;")
    w("")
    w("/// The Redis version the table was generated from.")
    w('pub const REDIS_VERSION: &str = "%s";' % version)
    w("")
    total = sum(1 + len(c.subcommands) for c in commands)
    w("/// The number of command ids: every command and subcommand.")
    w("pub const COUNT: usize = %d;" % total)
    w("")
    w("/// The length of the longest top-level command name.")
    w("pub(super) const MAX_NAME_LEN: usize = %d;" % max(len(c.name) for c in commands))
    w("")

    def spec(c, subs_ref):
        ks = ", ".join(c.key_specs)
        return ('Spec { name: "%s", id: %d, arity: %d, flags: %s, key_specs: &[%s], subcommands: %s }'
                % (c.name, c.id, c.arity, c.flags, ks, subs_ref))

    w("/// Every top-level command, sorted by name.")
    w("pub static COMMANDS: &[Spec] = &TOP;")
    w("")
    w("static TOP: [Spec; %d] = [" % len(commands))
    for c in commands:
        w(spec(c, "&%s" % c.static_name() if c.subcommands else "&[]") + ",")
    w("];")
    for c in commands:
        if not c.subcommands:
            continue
        w("")
        w("static %s: [Spec; %d] = [" % (c.static_name(), len(c.subcommands)))
        for s in c.subcommands:
            w(spec(s, "&[]") + ",")
        w("];")
    w("")
    w("/// Every spec by id.")
    w("pub(super) static BY_ID: [&Spec; COUNT] = [")
    for i, c in enumerate(commands):
        w("&TOP[%d]," % i)
        for j, _ in enumerate(c.subcommands):
            w("&%s[%d]," % (c.static_name(), j))
    w("];")
    w("")
    subs = [s for c in commands for s in c.subcommands]
    if len(commands) > (1 << SLOT_BITS) * 3 // 4 or len(subs) > (1 << SUB_SLOT_BITS) * 3 // 4:
        raise GenError("too many commands for the hash tables: raise SLOT_BITS/SUB_SLOT_BITS")
    seed, (disp, slots), (sub_disp, sub_slots) = perfect_hash(
        [c.name for c in commands],
        [(c.id, s.name.split("|", 1)[1]) for c in commands for s in c.subcommands])
    w("/// The length of the longest subcommand name (the part after `container|`).")
    w("pub(super) const MAX_SUB_LEN: usize = %d;" % max(len(s.name.split("|", 1)[1]) for s in subs))
    w("")
    w("// Perfect hashes (see `hash_name` in mod.rs): over the top-level names, and over the")
    w("// subcommands' names after `container|`, seeded with HASH_SEED + container id + 1.")
    w("pub(super) const HASH_SEED: u64 = %d;" % seed)
    w("pub(super) const HASH_BUCKET_BITS: u32 = %d;" % BUCKET_BITS)
    w("pub(super) const HASH_SLOT_BITS: u32 = %d;" % SLOT_BITS)
    w("pub(super) static HASH_DISPLACEMENTS: [u16; %d] = [%s];" % (len(disp), ", ".join(map(str, disp))))
    w("/// Index into `COMMANDS`, or `u16::MAX` for an empty slot.")
    w("pub(super) static HASH_SLOTS: [u16; %d] = [%s];"
      % (len(slots), ", ".join(str(EMPTY if i is None else i) for i in slots)))
    w("pub(super) const SUB_HASH_BUCKET_BITS: u32 = %d;" % SUB_BUCKET_BITS)
    w("pub(super) const SUB_HASH_SLOT_BITS: u32 = %d;" % SUB_SLOT_BITS)
    w("pub(super) static SUB_HASH_DISPLACEMENTS: [u16; %d] = [%s];"
      % (len(sub_disp), ", ".join(map(str, sub_disp))))
    w("/// A subcommand's id, or `u16::MAX` for an empty slot.")
    w("pub(super) static SUB_HASH_SLOTS: [u16; %d] = [%s];"
      % (len(sub_slots), ", ".join(str(EMPTY if i is None else subs[i].id) for i in sub_slots)))
    return "\n".join(out) + "\n"


def rustfmt(text, config_dir):
    """`text` formatted by rustfmt, with the configuration the crate's `cargo fmt` uses."""
    exe = shutil.which("rustfmt")
    if exe is None:
        print("warning: rustfmt not found; the output is not formatted", file=sys.stderr)
        return text
    done = subprocess.run([exe, "--edition", "2024", "--emit", "stdout"], input=text, cwd=config_dir,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise GenError("rustfmt failed:\n" + done.stderr)
    return done.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if the output would change")
    opts = ap.parse_args()

    # Turn SIGTERM/SIGHUP into an exception so the server is stopped on the way out.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        version, raw = query_redis(opts.redis_server)
    except (GenError, OSError) as e:
        print("gen-command-table: %s" % e, file=sys.stderr)
        return 1
    if not version.startswith("7.0."):
        print("warning: Redis %s; the table is meant for Redis 7.0" % version, file=sys.stderr)

    try:
        commands = sorted((Command(c) for c in raw), key=lambda c: c.name)
    except GenError as e:
        print("gen-command-table: %s" % e, file=sys.stderr)
        return 1
    next_id = 0
    for c in commands:
        c.id = next_id
        next_id += 1
        for s in c.subcommands:
            s.id = next_id
            next_id += 1
    if next_id > 0xFFFF:
        print("gen-command-table: too many commands for u16 ids", file=sys.stderr)
        return 1

    try:
        text = rustfmt(render(version, commands), opts.output.parent)
    except GenError as e:
        print("gen-command-table: %s" % e, file=sys.stderr)
        return 1

    if opts.check:
        current = opts.output.read_text() if opts.output.exists() else ""
        if current != text:
            print("%s is not up to date: run tools/gen-command-table.py" % opts.output, file=sys.stderr)
            return 1
        print("%s is up to date" % opts.output)
        return 0
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text)
    total = sum(1 + len(c.subcommands) for c in commands)
    print("wrote %s: %d commands, %d subcommands (%d ids), Redis %s"
          % (opts.output, len(commands), total - len(commands), total, version))
    return 0


if __name__ == "__main__":
    sys.exit(main())

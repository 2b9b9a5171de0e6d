#!/usr/bin/env python3
"""A tiny second host for the plugin ABI (docs/plugin-abi.md, version 1), in Python.

It loads the bundled modules with wasmtime-py (`pip install wasmtime`), written from the
ABI text alone, and checks each plugin's behaviour through the raw exports — so the SDK's
encoding, the WAT and the C plugins are checked against the spec independently of the
proxy. Run `plugins/build.sh` first, then `python3 plugins/tests/abi_host.py`.
"""

import json
import os
import struct
import sys

import wasmtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "wasm32-unknown-unknown", "release")


class Trap(Exception):
    pass


def enc_bytes(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<I", len(b)) + b


def enc_context(conn=1, db=0, peer="127.0.0.1:5000", attrs=None):
    attrs = dict(attrs or {})
    user = attrs.get("user", "")
    out = struct.pack("<QI", conn, db) + enc_bytes(peer) + enc_bytes(user)
    out += struct.pack("<I", len(attrs))
    for k, v in sorted(attrs.items()):
        out += enc_bytes(k) + enc_bytes(v)
    return out


def enc_command(args, keys=()):
    out = struct.pack("<I", len(args))
    for i, a in enumerate(args):
        out += bytes([1 if i in keys else 0]) + enc_bytes(a)
    return out


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("truncated")
        v = self.b[self.i : self.i + n]
        self.i += n
        return v

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def bytes(self):
        return self.take(self.u32())


REMEMBER = 0x80


def dec_verdict(b):
    """(action, attrs, remember): remember is None, or the list of key prefixes of the
    condition (empty: no condition) of a verdict the host is asked to remember."""
    r = Reader(b)
    kind = r.take(1)[0]
    remember = None
    if kind & REMEMBER:
        remember = [r.bytes() for _ in range(r.u32())]
        kind &= ~REMEMBER
        if kind == 1:
            raise ValueError("a remembered rewrite")
    if kind == 0:
        action = ("continue",)
    elif kind == 1:
        action = ("rewrite", [r.bytes() for _ in range(r.u32())])
    elif kind == 2:
        action = ("reply", r.bytes())
    elif kind == 3:
        action = ("reject", r.bytes().decode())
    elif kind == 4:
        action = ("prefix_keys", r.bytes())
    else:
        raise ValueError(f"bad kind {kind}")
    attrs = [(r.bytes().decode(), r.bytes().decode()) for _ in range(r.u32())]
    if r.i != len(b):
        raise ValueError("trailing bytes")
    return action, attrs, remember


def dec_verdict_list(b, n):
    """The output of tessera_on_commands for n commands: one (action, attrs, remember) per
    command decided, None for a plain Continue (an empty entry). Refuses what the host
    refuses."""
    r = Reader(b)
    k = r.u32()
    if not 1 <= k <= n:
        raise ValueError(f"{k} verdicts for {n} commands")
    out = []
    for i in range(k):
        entry = r.bytes()
        v = dec_verdict(entry) if entry else None
        if v is not None and v[1] and i + 1 < k:
            raise ValueError(f"verdict {i} sets attributes but is not the last")
        out.append(v)
    if r.i != len(b):
        raise ValueError("trailing bytes")
    return out


class Plugin:
    """One instance of a module, as the proxy would hold it."""

    def __init__(self, path, config=b"", memory_limit=16 << 20, fuel=10_000_000):
        cfg = wasmtime.Config()
        cfg.consume_fuel = True  # stands in for the proxy's epoch deadline
        self.engine = wasmtime.Engine(cfg)
        if path.endswith(".wat"):
            module = wasmtime.Module(self.engine, open(path).read())
        else:
            module = wasmtime.Module.from_file(self.engine, path)
        self.logs = []
        self.fuel = fuel
        self.store = wasmtime.Store(self.engine)
        self.store.set_limits(memory_size=memory_limit)
        linker = wasmtime.Linker(self.engine)
        for imp in module.imports:
            if imp.module != "tessera" or imp.name not in ("log", "now_ms"):
                raise RuntimeError(f"import {imp.module}.{imp.name} is not allowed")
        linker.define_func(
            "tessera",
            "log",
            wasmtime.FuncType([wasmtime.ValType.i32()] * 3, []),
            self._log,
            access_caller=True,
        )
        linker.define_func(
            "tessera", "now_ms", wasmtime.FuncType([], [wasmtime.ValType.i64()]), lambda: 0
        )
        self.inst = linker.instantiate(self.store, module)
        self.ex = self.inst.exports(self.store)
        self.mem = self.ex["memory"]
        version = self._call("tessera_abi_version")
        if version != 1:
            raise RuntimeError(f"ABI version {version}, this host speaks 1")
        # (ptr, size) of the input buffer, kept while the module lets the host reuse it.
        self.input = None
        self.allocs = 0
        self.calls = 0
        self.reusable = "tessera_input_reusable" in self.ex and self._call("tessera_input_reusable") == 1
        if "tessera_on_configure" in self.ex:
            v = self._hook("tessera_on_configure", config)
            if v is not None and v[0][0] == "reject":
                raise RuntimeError(f"configure refused: {v[0][1]}")

    def _log(self, caller, level, ptr, length):
        mem = caller["memory"]
        self.logs.append((level, bytes(mem.read(caller, ptr, ptr + length)).decode()))

    def _call(self, name, *args):
        self.store.set_fuel(self.fuel)
        try:
            return self.ex[name](self.store, *args)
        except wasmtime.Trap as e:
            raise Trap(" ".join(str(e).split())) from None

    def _read_packed(self, packed):
        packed &= (1 << 64) - 1
        ptr, length = packed >> 32, packed & 0xFFFFFFFF
        return bytes(self.mem.read(self.store, ptr, ptr + length))

    def _hook(self, name, data, n=None):
        """Calls a hook; with n, a tessera_on_commands for n commands (a list back)."""
        if self.input is not None and len(data) <= self.input[1]:
            ptr = self.input[0]
        else:
            # Like the proxy: a reusable buffer is asked for with room to spare.
            size = len(data)
            if self.reusable and size <= 64 << 10:
                size = max(1024, 1 << (size - 1).bit_length())
            ptr = self._call("tessera_alloc", size)
            self.allocs += 1
            if self.reusable:
                self.input = (ptr, size)
        self.mem.write(self.store, data, ptr)
        packed = self._call(name, ptr, len(data))
        self.calls += 1
        if n is not None:
            return [None] * n if packed == 0 else dec_verdict_list(self._read_packed(packed), n)
        if packed == 0:
            return None
        return dec_verdict(self._read_packed(packed))

    def subscriptions(self, export="tessera_subscriptions"):
        if export not in self.ex:
            return []
        packed = self._call(export)
        if packed == 0:
            return []
        r = Reader(self._read_packed(packed))
        return [r.bytes().decode() for _ in range(r.u32())]

    def reply_subscriptions(self):
        """The commands on_reply is called for: the reply list, or without one the
        subscriptions."""
        if "tessera_reply_subscriptions" not in self.ex:
            return self.subscriptions()
        return self.subscriptions("tessera_reply_subscriptions")

    def has(self, hook):
        return f"tessera_{hook}" in self.ex

    def on_command(self, args, keys=(), attrs=None):
        return self._hook("tessera_on_command", enc_context(attrs=attrs) + enc_command(args, keys))

    def on_commands(self, cmds, attrs=None):
        """One tessera_on_commands call for cmds, a list of (args, keys); returns the
        verdicts of the commands it decided (K of them)."""
        data = enc_context(attrs=attrs) + struct.pack("<I", len(cmds))
        data += b"".join(enc_command(args, keys) for args, keys in cmds)
        return self._hook("tessera_on_commands", data, len(cmds))

    def batch(self, cmds, attrs=None):
        """Decides every command of cmds as the proxy does with one plugin: calls
        tessera_on_commands again with the rest (and the attributes set so far) until all
        are decided. Returns the verdicts, one per command, and the final attributes."""
        attrs, out = dict(attrs or {}), []
        while len(out) < len(cmds):
            got = self.on_commands(cmds[len(out) :], attrs)
            out += got
            for k, v in got[-1][1] if got[-1] else []:
                if v:
                    attrs[k] = v
                else:
                    attrs.pop(k, None)
        return out, attrs

    def on_reply(self, args, reply, keys=(), attrs=None):
        data = enc_context(attrs=attrs) + enc_command(args, keys) + enc_bytes(reply)
        return self._hook("tessera_on_reply", data)


FAILS = []


def check(what, got, want):
    if got != want:
        FAILS.append(what)
        print(f"FAIL {what}: got {got!r}, want {want!r}")
    else:
        print(f"ok   {what}")


def rust(name):
    return os.path.join(RELEASE, name + ".wasm")


def main():
    # command-filter
    cfg = json.load(open(os.path.join(ROOT, "command-filter", "config.example.json")))
    p = Plugin(rust("command_filter"), json.dumps(cfg).encode())
    check("command-filter exports", [p.has(h) for h in ("on_connect", "on_command", "on_reply")], [False, True, False])
    check("command-filter subscribes to all", p.subscriptions(), [])
    check("command-filter GET continues, remembered", p.on_command([b"GET", b"k"], {1}), (("continue",), [], []))
    check(
        "command-filter FLUSHALL rejected, remembered",
        p.on_command([b"FLUSHALL"]),
        (("reject", "NOPERM command not allowed by policy: 'flushall'"), [], []),
    )
    check(
        "command-filter alice's allow list",
        p.on_command([b"INCR", b"k"], {1}, {"user": "alice"})[0][0],
        "reject",
    )
    try:
        Plugin(rust("command_filter"), b'{"deny": 3}')
        check("command-filter bad config refused", False, True)
    except RuntimeError as e:
        check("command-filter bad config refused", "bad config" in str(e), True)

    # key-prefix
    p = Plugin(rust("key_prefix"), b'{"tenants": {"alice": "t1:"}}')
    alice = {"user": "alice"}
    check(
        "key-prefix prefixes keys, remembered",
        p.on_command([b"MGET", b"a", b"b"], {1, 2}, alice),
        (("prefix_keys", b"t1:"), [], []),
    )
    check(
        "key-prefix rewrites KEYS",
        p.on_command([b"KEYS", b"u*"], (), alice),
        (("rewrite", [b"KEYS", b"t1:u*"]), [], None),
    )
    check("key-prefix tenant keyless", p.on_command([b"PING"], (), alice), (("prefix_keys", b"t1:"), [], []))
    check("key-prefix no tenant", p.on_command([b"GET", b"a"], {1}), (("reject", "NOPERM no tenant for this user"), [], None))
    check("key-prefix keyless", p.on_command([b"PING"]), None)
    check(
        "key-prefix strips KEYS reply",
        p.on_reply([b"KEYS", b"t1:*"], b"*1\r\n$4\r\nt1:a\r\n", attrs=alice),
        (("reply", b"*1\r\n$1\r\na\r\n"), [], None),
    )
    check("key-prefix leaves GET reply", p.on_reply([b"GET", b"t1:a"], b"$1\r\nv\r\n", {1}, alice), None)
    check("key-prefix on_command sees all", p.subscriptions(), [])
    check("key-prefix on_reply sees key replies", p.reply_subscriptions(), ["keys", "scan", "randomkey"])
    check("key-prefix input buffer reused", (p.reusable, p.allocs), (True, 1))
    big = [b"SET", b"k", b"v" * 5000]
    check("key-prefix larger input", p.on_command(big, {1}, alice), (("prefix_keys", b"t1:"), [], []))
    check("key-prefix larger input reallocated", p.allocs, 2)
    check("key-prefix after it", p.on_command([b"GET", b"a"], {1}, alice), (("prefix_keys", b"t1:"), [], []))

    # acl-auth
    cfg = open(os.path.join(ROOT, "acl-auth", "config.example.json")).read().encode()
    p = Plugin(rust("acl_auth"), cfg)
    check("acl-auth NOAUTH", p.on_command([b"GET", b"app:1"], {1}), (("reject", "NOAUTH Authentication required."), [], []))
    check(
        "acl-auth AUTH ok",
        p.on_command([b"AUTH", b"alice", b"secret"]),
        (("reply", b"+OK\r\n"), [("user", "alice")], None),
    )
    check(
        "acl-auth AUTH wrong",
        p.on_command([b"AUTH", b"alice", b"x"]),
        (("reject", "WRONGPASS invalid username-password pair or user is disabled."), [], None),
    )
    check(
        "acl-auth HELLO AUTH rewritten",
        p.on_command([b"HELLO", b"3", b"AUTH", b"alice", b"secret"]),
        (("rewrite", [b"HELLO", b"3"]), [("user", "alice")], None),
    )
    app = (("continue",), [], [b"app:"])
    check("acl-auth allowed, remembered for app:", p.on_command([b"GET", b"app:1"], {1}, {"user": "alice"}), app)
    check(
        "acl-auth key denied",
        p.on_command([b"GET", b"other"], {1}, {"user": "alice"}),
        (("reject", "NOPERM this user has no permissions to access one of the keys used as arguments"), [], None),
    )
    big = b"x" * 3_000_000
    check("acl-auth big input", p.on_command([b"SET", b"app:big", big], {1}, {"user": "alice"}), app)
    check("acl-auth after big input", p.on_command([b"GET", b"app:1"], {1}, {"user": "alice"}), app)

    # deny-secret.wat
    p = Plugin(os.path.join(ROOT, "wat", "deny-secret.wat"))
    check("wat secret", p.on_command([b"get", b"secret:x"], {1}), (("reject", "ERR secret keys are off limits (wat)"), [], None))
    check("wat GET other", p.on_command([b"GET", b"public"], {1}, {"user": "bob", "t": "1"}), None)
    check("wat SET secret", p.on_command([b"SET", b"secret:x", b"v"], {1}), None)
    check("wat input buffer reused", (p.reusable, p.allocs), (True, 1))

    # reply-get.wat and reply-strlen.wat: on_reply without and with a reply list
    p = Plugin(os.path.join(ROOT, "wat", "reply-get.wat"))
    check("reply-get replies follow subscriptions", (p.subscriptions(), p.reply_subscriptions()), (["get"], ["get"]))
    check("reply-get replaces", p.on_reply([b"GET", b"k"], b"$1\r\nv\r\n", {1}), (("reply", b"+from-wat\r\n"), [], None))
    check("reply-get allocates every call", (p.reusable, p.allocs), (False, 1))
    p.on_reply([b"GET", b"k"], b"$1\r\nv\r\n", {1})
    check("reply-get allocates every call", p.allocs, 2)
    p = Plugin(os.path.join(ROOT, "wat", "reply-strlen.wat"))
    check("reply-strlen reply list", (p.subscriptions(), p.reply_subscriptions()), (["get"], ["strlen"]))

    # tessera_on_commands: the SDK exports it next to tessera_on_command
    p = Plugin(rust("command_filter"), open(os.path.join(ROOT, "command-filter", "config.example.json"), "rb").read())
    check("command-filter exports on_commands", p.has("on_commands"), True)
    go = (("continue",), [], [])
    check("command-filter batch all continue", p.on_commands([([b"GET", b"k"], {1}), ([b"PING"], ())]), [go, go])
    check(
        "command-filter batch",
        p.on_commands([([b"GET", b"k"], {1}), ([b"FLUSHALL"], ()), ([b"PING"], ())]),
        [go, (("reject", "NOPERM command not allowed by policy: 'flushall'"), [], []), go],
    )
    p = Plugin(rust("key_prefix"), b'{"tenants": {"alice": "t1:"}}')
    check(
        "key-prefix batch",
        p.on_commands([([b"MGET", b"a", b"b"], {1, 2}), ([b"PING"], ()), ([b"GET", b"c"], {1})], alice),
        [(("prefix_keys", b"t1:"), [], [])] * 3,
    )
    cfg = open(os.path.join(ROOT, "acl-auth", "config.example.json")).read().encode()
    p = Plugin(rust("acl_auth"), cfg)
    get = ([b"GET", b"app:1"], {1})
    check(
        "acl-auth batch stops at AUTH",
        p.on_commands([get, ([b"AUTH", b"alice", b"secret"], ()), get, get]),
        [(("reject", "NOAUTH Authentication required."), [], []), (("reply", b"+OK\r\n"), [("user", "alice")], None)],
    )
    check("acl-auth rest of the batch as alice", p.on_commands([get, get], {"user": "alice"}), [app, app])
    calls = p.calls
    verdicts, attrs = p.batch([get, ([b"AUTH", b"alice", b"secret"], ()), get, get])
    check("acl-auth whole batch", (verdicts[2:], attrs, p.calls - calls), ([app, app], {"user": "alice"}, 2))

    # one-at-a-time.wat: tessera_on_commands only, one command per call
    p = Plugin(os.path.join(ROOT, "wat", "one-at-a-time.wat"))
    check("one-at-a-time exports", [p.has(h) for h in ("on_command", "on_commands")], [False, True])
    three = (("reject", "ERR three arguments refused by one-at-a-time"), [], None)
    check("one-at-a-time decides one", p.on_commands([([b"SET", b"k", b"v"], {1}), ([b"PING"], ())]), [three])
    check("one-at-a-time continue", p.on_commands([([b"PING"], ()), ([b"SET", b"k", b"v"], {1})]), [None])
    check("one-at-a-time single", p.on_commands([([b"GET", b"k"], {1})], {"user": "bob", "t": "x"}), [None])
    calls = p.calls
    cmds = [([b"SET", b"k", b"v"], {1}), ([b"GET", b"k"], {1}), ([b"GET", b"a", b"b"], {1, 2}), ([b"PING"], ())]
    verdicts, _ = p.batch(cmds, {"user": "alice", "tenant": "t1"})
    check("one-at-a-time batch", (verdicts, p.calls - calls), ([three, None, three, None], 4))
    check("one-at-a-time allocates every call", (p.reusable, p.allocs), (False, p.calls))

    # C
    c = os.path.join(ROOT, "target", "c", "deny-flushall.wasm")
    if os.path.exists(c):
        p = Plugin(c)
        check("c subscriptions", p.subscriptions(), ["flushall", "flushdb"])
        check("c FLUSHDB", p.on_command([b"FlushDB"]), (("reject", "NOPERM 'flushdb' is disabled by policy (c plugin)"), [], None))
        check("c other", p.on_command([b"flushallx"]), None)

    # misbehaving modules
    for name, key, want in [("trap", b"boom", "unreachable"), ("loop", b"loop", "fuel"), ("grow", b"grow", "unreachable")]:
        p = Plugin(os.path.join(ROOT, "wat", name + ".wat"), memory_limit=4 << 20)
        check(f"{name}.wat continues GET k", p.on_command([b"GET", b"k"], {1}), None)
        try:
            p.on_command([b"GET", key], {1})
            check(f"{name}.wat fails", "no trap", want)
        except Trap as e:
            check(f"{name}.wat fails ({want})", want in str(e), True)
    try:
        Plugin(os.path.join(ROOT, "wat", "bad-version.wat"))
        check("bad-version refused", False, True)
    except RuntimeError as e:
        check(f"bad-version refused ({e})", "version 2" in str(e), True)

    print(f"{len(FAILS)} failure(s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())

/*
 * deny-flushall.c: a Tessera plugin in C, without the SDK (ABI version 1,
 * docs/plugin-abi.md). Build with ./build.sh (clang + lld, no libc).
 *
 * It subscribes to `flushall` and `flushdb` and rejects them with
 * `-NOPERM 'flushall' is disabled by policy (c plugin)` (naming the command as sent,
 * lowercased). Everything else is never sent to it.
 *
 * No libc: the input buffer lives at __heap_base (memory grows as needed), and the verdict
 * is built in a static buffer that stays valid until the next call.
 */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))

extern unsigned char __heap_base;

static uint32_t load_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned char *store_u32(unsigned char *p, uint32_t v) {
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
    return p + 4;
}

static unsigned char *store_bytes(unsigned char *p, const char *s, uint32_t n) {
    p = store_u32(p, n);
    for (uint32_t i = 0; i < n; i++) p[i] = (unsigned char)s[i];
    return p + n;
}

/* Skips a string/bytes field. */
static const unsigned char *skip(const unsigned char *p) { return p + 4 + load_u32(p); }

EXPORT("tessera_abi_version") int32_t abi_version(void) { return 1; }

/* One input buffer, at the start of the heap, grown to fit. */
EXPORT("tessera_alloc") int32_t alloc(int32_t size) {
    uintptr_t base = (uintptr_t)&__heap_base;
    uintptr_t end = base + (uint32_t)size;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uintptr_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (uintptr_t)-1) __builtin_trap();
    }
    return (int32_t)base;
}

/* The buffer is always the same, so the host may write later inputs that fit there without
 * calling tessera_alloc again. */
EXPORT("tessera_input_reusable") int32_t input_reusable(void) { return 1; }

static int64_t pack(const unsigned char *ptr, uint32_t len) {
    return (int64_t)((uint64_t)(uintptr_t)ptr << 32 | len);
}

static unsigned char out[256];

/* A string list: 2 names. */
EXPORT("tessera_subscriptions") int64_t subscriptions(void) {
    unsigned char *p = store_u32(out, 2);
    p = store_bytes(p, "flushall", 8);
    p = store_bytes(p, "flushdb", 7);
    return pack(out, (uint32_t)(p - out));
}

EXPORT("tessera_on_command") int64_t on_command(int32_t ptr, int32_t len) {
    (void)len;
    const unsigned char *p = (const unsigned char *)(uintptr_t)ptr;
    /* context: u64 id, u32 db, string peer, string user, attributes */
    p = skip(skip(p + 12));
    for (uint32_t n = load_u32(p), i = (p += 4, 0); i < n; i++) p = skip(skip(p));
    /* command: u32 argc, then u8 flags + bytes per argument; argument 0 is the name */
    if (load_u32(p) < 1) return 0;
    uint32_t name_len = load_u32(p + 5);
    const unsigned char *name = p + 9;

    char lower[8];
    if (name_len != 7 && name_len != 8) return 0;
    for (uint32_t i = 0; i < name_len; i++) {
        unsigned char c = name[i];
        lower[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    static const char flushall[] = "flushall", flushdb[] = "flushdb";
    const char *want = name_len == 8 ? flushall : flushdb;
    for (uint32_t i = 0; i < name_len; i++)
        if (lower[i] != want[i]) return 0;

    /* verdict: u8 3 (Reject), string message, u32 0 attributes */
    static const char head[] = "NOPERM '", tail[] = "' is disabled by policy (c plugin)";
    unsigned char *q = out;
    *q++ = 3;
    q = store_u32(q, (sizeof head - 1) + name_len + (sizeof tail - 1));
    for (uint32_t i = 0; i < sizeof head - 1; i++) *q++ = (unsigned char)head[i];
    for (uint32_t i = 0; i < name_len; i++) *q++ = (unsigned char)lower[i];
    for (uint32_t i = 0; i < sizeof tail - 1; i++) *q++ = (unsigned char)tail[i];
    q = store_u32(q, 0);
    return pack(out, (uint32_t)(q - out));
}

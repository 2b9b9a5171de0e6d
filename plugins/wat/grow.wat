;; grow.wat: a misbehaving test plugin (ABI version 1, no SDK). On `GET grow` its
;; on_command grows memory 1 MiB (16 pages) at a time without end, writing to each new
;; chunk; when `memory.grow` fails (the proxy's memory_limit_mb) it traps with
;; `unreachable`, like an allocator that runs out. (If the host's limiter traps the grow
;; itself, that trap comes first.) Every other command continues.
(module
  (memory (export "memory") 1)

  (func (export "tessera_abi_version") (result i32) (i32.const 1))

  ;; Returns 4096, after growing memory so that `size` bytes fit there.
  (func (export "tessera_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages                                      ;; (4096 + size + 65535) / 65536
      (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 4096))

  ;; Skips a string/bytes field at $p (u32 length + bytes); returns the next field.
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))

  ;; Whether the input at $p (a context, then a command) is `GET <key>` (GET in any case)
  ;; with <key> equal to the $n bytes at $lit.
  (func $is_get_of (param $p i32) (param $lit i32) (param $n i32) (result i32)
    (local $attrs i32)
    (local $i i32)
    ;; context: u64 id, u32 db, string peer, string user, u32 count, count x (key, value)
    (local.set $p (call $skip (call $skip (i32.add (local.get $p) (i32.const 12)))))
    (local.set $attrs (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $skip_attrs
        (br_if $done (i32.eqz (local.get $attrs)))
        (local.set $p (call $skip (call $skip (local.get $p))))
        (local.set $attrs (i32.sub (local.get $attrs) (i32.const 1)))
        (br $skip_attrs)))
    ;; command: u32 argc = 2, then (u8 flags, u32 length, bytes) per argument
    (if (i32.ne (i32.load (local.get $p)) (i32.const 2)) (then (return (i32.const 0))))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (if (i32.ne (i32.load offset=1 (local.get $p)) (i32.const 3)) (then (return (i32.const 0))))
    ;; the 3 name bytes, lowercased, read little-endian: "get" = 0x746567
    (if (i32.ne (i32.and (i32.or (i32.load offset=5 (local.get $p)) (i32.const 0x202020))
                         (i32.const 0xffffff))
                (i32.const 0x746567))
      (then (return (i32.const 0))))
    (local.set $p (i32.add (local.get $p) (i32.const 8)))  ;; argument 1
    (if (i32.ne (i32.load offset=1 (local.get $p)) (local.get $n)) (then (return (i32.const 0))))
    (block $differs
      (loop $cmp
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $differs
          (i32.ne (i32.load8_u offset=5 (i32.add (local.get $p) (local.get $i)))
                  (i32.load8_u (i32.add (local.get $lit) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $cmp)))
    (i32.const 0))

  (data (i32.const 16) "grow")

  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (local $page i32)
    (if (call $is_get_of (local.get $ptr) (i32.const 16) (i32.const 4))
      (then
        (loop $more
          (local.set $page (memory.grow (i32.const 16)))
          (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
          ;; touch the first byte of the new chunk
          (i32.store8 (i32.shl (local.get $page) (i32.const 16)) (i32.const 1))
          (br $more))))
    (i64.const 0))
)

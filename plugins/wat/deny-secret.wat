;; deny-secret.wat: a Tessera plugin written by hand, without the SDK (ABI version 1,
;; docs/plugin-abi.md). Loaded as text: the proxy accepts WAT as well as .wasm.
;;
;; Behaviour: `GET <key>` where the key (argument 1, marked as a key by the host) starts
;; with `secret:` is rejected with `-ERR secret keys are off limits (wat)`; every other
;; command continues. It exports no `tessera_subscriptions`, so it sees every command,
;; and no `on_configure`/`on_connect`/`on_reply`, so the host never calls those.
;;
;; Memory map: 16..23 the literal "secret:", 64..108 the reject verdict, 4096.. the
;; input buffer handed out by tessera_alloc (the same one for every call, so it exports
;; tessera_input_reusable: the host writes inputs that fit there without asking again).
;; It trusts the host's input layout: a malformed input reads past the end and traps.
(module
  (memory (export "memory") 1)

  (data (i32.const 16) "secret:")
  ;; Verdict: u8 kind 3 (Reject), u32 length 36, the message, u32 0 attributes.
  (data (i32.const 64) "\03\24\00\00\00ERR secret keys are off limits (wat)\00\00\00\00")

  (func (export "tessera_abi_version") (result i32) (i32.const 1))

  ;; The buffer tessera_alloc returns stays the input buffer: the host may reuse it.
  (func (export "tessera_input_reusable") (result i32) (i32.const 1))

  ;; Returns 4096, after growing memory so that `size` bytes fit there.
  (func (export "tessera_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16))) ;; (4096 + size + 65535) / 65536
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 4096))

  ;; Skips a string/bytes field at $p (u32 length + bytes); returns the next field.
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))

  ;; Skips the context at $p; returns the address of the command (its u32 argc).
  (func $skip_context (param $p i32) (result i32)
    (local $n i32)
    (local.set $p (i32.add (local.get $p) (i32.const 12)))  ;; u64 conn id, u32 db
    (local.set $p (call $skip (local.get $p)))               ;; peer
    (local.set $p (call $skip (local.get $p)))               ;; user
    (local.set $n (i32.load (local.get $p)))                 ;; attribute count
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $attrs
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $p (call $skip (call $skip (local.get $p))))  ;; key, value
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $attrs)))
    (local.get $p))

  ;; tessera_on_command(ptr, len) -> i64: 0 (Continue) or (64 << 32) | 45 (the Reject).
  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32)
    (local $i i32)
    (local.set $p (call $skip_context (local.get $ptr)))
    ;; at least two arguments
    (if (i32.lt_u (i32.load (local.get $p)) (i32.const 2)) (then (return (i64.const 0))))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    ;; argument 0: u8 flags at $p, u32 length at $p+1, bytes at $p+5; must be "get" in any case
    (if (i32.ne (i32.load (i32.add (local.get $p) (i32.const 1))) (i32.const 3))
      (then (return (i64.const 0))))
    (if (i32.or
          (i32.or
            (i32.ne (i32.or (i32.load8_u offset=5 (local.get $p)) (i32.const 0x20)) (i32.const 0x67))  ;; g
            (i32.ne (i32.or (i32.load8_u offset=6 (local.get $p)) (i32.const 0x20)) (i32.const 0x65))) ;; e
          (i32.ne (i32.or (i32.load8_u offset=7 (local.get $p)) (i32.const 0x20)) (i32.const 0x74)))   ;; t
      (then (return (i64.const 0))))
    ;; argument 1: must be flagged as a key, at least 7 bytes, starting with "secret:"
    (local.set $p (i32.add (local.get $p) (i32.const 8)))
    (if (i32.eqz (i32.and (i32.load8_u (local.get $p)) (i32.const 1)))
      (then (return (i64.const 0))))
    (if (i32.lt_u (i32.load offset=1 (local.get $p)) (i32.const 7))
      (then (return (i64.const 0))))
    (block $differs
      (loop $cmp
        (br_if $differs
          (i32.ne (i32.load8_u offset=5 (i32.add (local.get $p) (local.get $i)))
                  (i32.load8_u offset=16 (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $cmp (i32.lt_u (local.get $i) (i32.const 7)))
        ;; all 7 bytes equal: reject
        (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 45)))))
    (i64.const 0))
)

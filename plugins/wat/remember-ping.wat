;; remember-ping.wat: a test module (ABI version 1) that answers every PING itself with
;; `+wasm-pong` and asks the host to remember that verdict (kind 2 with the flag 0x80, no
;; condition), so the host answers the connection's later PINGs without calling it. Written
;; without the SDK: the remember flag is part of the language-neutral ABI.
;;
;; Memory map: 16..28 the subscription list, 64..89 the verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; String list: u32 count 1, then u32 length 4 and "ping".
  (data (i32.const 16) "\01\00\00\00\04\00\00\00ping")
  ;; u8 0x82 (Reply, remembered), u32 0 key prefixes (no condition), u32 length 12,
  ;; "+wasm-pong\r\n", u32 0 attributes.
  (data (i32.const 64) "\82\00\00\00\00\0c\00\00\00+wasm-pong\0d\0a\00\00\00\00")

  (func (export "tessera_abi_version") (result i32) (i32.const 1))

  ;; Returns 4096, after growing memory so that `size` bytes fit there.
  (func (export "tessera_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 4096))

  ;; (16 << 32) | 12
  (func (export "tessera_subscriptions") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 12)))

  ;; (64 << 32) | 25, whatever the input.
  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 25)))
)

;; auth-any.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) subscribed to AUTH
;; only: it answers every AUTH `+OK` and sets the attribute `user` = `alice`, so the host
;; counts the connection as authenticated. Used to check that the commands before an AUTH
;; in a pipeline are not run as that user (tests/plugins.rs).
;;
;; Memory map: 16..28 the subscription list, 32..63 the verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; The string list ["auth"]: u32 1, u32 4, "auth".
  (data (i32.const 16) "\01\00\00\00\04\00\00\00auth")
  ;; Reply (u8 2), bytes "+OK\r\n", u32 1 attribute: "user" = "alice". 31 bytes.
  (data (i32.const 32) "\02\05\00\00\00+OK\0d\0a\01\00\00\00\04\00\00\00user\05\00\00\00alice")

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

  (func (export "tessera_subscriptions") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 12)))

  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 31)))
)

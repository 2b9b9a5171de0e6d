;; tag-echo.wat: a test module (ABI version 1) that subscribes to `echo` only and, for every
;; ECHO, lets it continue and sets the connection attribute `user` = `tagged`. Placed before
;; a plugin that remembers its verdicts, it changes that plugin's context in the middle of
;; a batch (tests/plugins.rs): the commands after the ECHO must not be decided by what was
;; remembered for the connection before it.
;;
;; Memory map: 16..28 the subscription list, 64..87 the verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; String list: u32 count 1, then u32 length 4 and "echo".
  (data (i32.const 16) "\01\00\00\00\04\00\00\00echo")
  ;; Continue (u8 0), then u32 1 attribute: u32 4 "user", u32 6 "tagged".
  (data (i32.const 64) "\00\01\00\00\00\04\00\00\00user\06\00\00\00tagged")

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

  ;; (64 << 32) | 23, whatever the input.
  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 23)))
)

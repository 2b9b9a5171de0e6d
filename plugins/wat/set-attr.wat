;; set-attr.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) with only
;; tessera_on_command, called once per command: it lets every command continue and sets
;; the connection attribute `seen` = `yes` each time. Used to check that the plugins after
;; it in the chain see an attribute from the very command it was set on, also in the middle
;; of a batch (tests/plugins.rs).
;;
;; Memory map: 16..42 the verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; Continue (u8 0), then u32 1 attribute: u32 4 "seen", u32 3 "yes".
  (data (i32.const 16) "\00\01\00\00\00\04\00\00\00seen\03\00\00\00yes")

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

  ;; (16 << 32) | 20: the verdict above, 20 bytes.
  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 20)))
)

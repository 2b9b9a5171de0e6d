;; prefix-all.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) with only
;; tessera_on_command: it puts "t:" in front of every key (PrefixKeys), a tenant namespace
;; that does not declare tessera_gates_access. Used to check that the host refuses such
;; verdicts from a plugin configured fail-open (tests/plugins.rs).
;;
;; Memory map: 16..27 the verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; PrefixKeys (u8 4), bytes "t:", u32 0 attributes: 11 bytes.
  (data (i32.const 16) "\04\02\00\00\00t:\00\00\00\00")

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

  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 11)))
)

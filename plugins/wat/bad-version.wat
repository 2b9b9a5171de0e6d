;; bad-version.wat: a test module the proxy must refuse to load: it is otherwise a valid
;; plugin (it continues every command), but `tessera_abi_version` returns 2, and this proxy
;; speaks ABI version 1. Loading it must fail with a message naming the version.
(module
  (memory (export "memory") 1)

  (func (export "tessera_abi_version") (result i32) (i32.const 2))

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


  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 0))
)

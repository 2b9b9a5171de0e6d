;; attr-flood.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) with only
;; tessera_on_command, called once per command. A command whose input ends with "!" (its
;; last argument does) gets a Continue that sets 100000 attributes "00000".."99999" = "v",
;; far over the host's limit on a verdict's attributes; any other command continues. Used
;; to check that such a verdict is malformed and costs the worker no time (tests/plugins.rs).
;;
;; Memory map: 4096.. the input, 65536.. the verdict (5 + 100000 × 14 bytes).
(module
  (memory (export "memory") 32)

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
    (local $i i32) (local $out i32) (local $n i32) (local $k i32)
    (if (i32.ne
          (i32.load8_u (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1)))
          (i32.const 33))
      (then (return (i64.const 0))))
    ;; Continue (u8 0), u32 100000 attributes, each: u32 5, five digits, u32 1, "v".
    (i32.store8 (i32.const 65536) (i32.const 0))
    (i32.store (i32.const 65537) (i32.const 100000))
    (local.set $out (i32.const 65541))
    (block $done
      (loop $attrs
        (br_if $done (i32.eq (local.get $i) (i32.const 100000)))
        (i32.store (local.get $out) (i32.const 5))
        (local.set $n (local.get $i))
        (local.set $k (i32.const 4))
        (block $written
          (loop $digits
            (i32.store8
              (i32.add (i32.add (local.get $out) (i32.const 4)) (local.get $k))
              (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
            (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
            (br_if $written (i32.eqz (local.get $k)))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (br $digits)))
        (i32.store (i32.add (local.get $out) (i32.const 9)) (i32.const 1))
        (i32.store8 (i32.add (local.get $out) (i32.const 13)) (i32.const 118))
        (local.set $out (i32.add (local.get $out) (i32.const 14)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $attrs)))
    (i64.or
      (i64.shl (i64.const 65536) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $out) (i32.const 65536)))))
)

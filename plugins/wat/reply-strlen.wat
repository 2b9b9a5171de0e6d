;; reply-strlen.wat: a test module (ABI version 1) with an on_reply hook and a reply list.
;;
;; Like reply-get.wat (tessera_subscriptions names `get`; tessera_on_reply replaces every
;; reply it sees with `+from-wat`), but it also exports tessera_reply_subscriptions naming
;; `strlen`: the host calls on_reply for STRLEN replies only, not for GET.
;;
;; Memory map: 16..26 the subscription list, 32..45 the reply subscription list, 64..83 the
;; Reply verdict, 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; String list: u32 count 1, then u32 length 3 and "get".
  (data (i32.const 16) "\01\00\00\00\03\00\00\00get")
  ;; String list: u32 count 1, then u32 length 6 and "strlen".
  (data (i32.const 32) "\01\00\00\00\06\00\00\00strlen")
  ;; Verdict: u8 kind 2 (Reply), u32 length 11, "+from-wat\r\n", u32 0 attributes.
  (data (i32.const 64) "\02\0b\00\00\00+from-wat\0d\0a\00\00\00\00")

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

  ;; (16 << 32) | 11
  (func (export "tessera_subscriptions") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 11)))

  ;; (32 << 32) | 14
  (func (export "tessera_reply_subscriptions") (result i64)
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 14)))

  ;; (64 << 32) | 20, whatever the input.
  (func (export "tessera_on_reply") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 20)))
)

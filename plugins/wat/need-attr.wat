;; need-attr.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) with only the
;; batched tessera_on_commands: it decides all N commands of a call at once, each the same
;; way, by the context it was called with: Continue if the connection has at least one
;; attribute, else Reject `-ERR need-attr: no attribute`. With set-attr.wat before it in the
;; chain, every command passes only if the host gives it set-attr's attribute from the
;; command set-attr set it on (tests/plugins.rs).
;;
;; Memory map: 16..51 the Reject verdict (36 bytes), 1024..4095 the verdict list it builds (at most 64
;; entries of 40 bytes: of a larger batch it decides the first 64, and the host calls again
;; with the rest), 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; Reject (u8 3), u32 27, the message, u32 0 attributes: 36 bytes.
  (data (i32.const 16) "\03\1b\00\00\00ERR need-attr: no attribute\00\00\00\00")

  (func (export "tessera_abi_version") (result i32) (i32.const 1))

  (func (export "tessera_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 4096))

  ;; Skips a u32-length-prefixed field at $p; returns the next field.
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))

  ;; tessera_on_commands(ptr, len) -> i64. The context: u64 conn id, u32 db, peer, user,
  ;; u32 attribute count, ...; after it, u32 N.
  (func (export "tessera_on_commands") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $attrs i32) (local $n i32) (local $k i32) (local $out i32)
    (local.set $p (i32.add (local.get $ptr) (i32.const 12)))
    (local.set $p (call $skip (call $skip (local.get $p))))   ;; peer, user
    (local.set $attrs (i32.load (local.get $p)))
    ;; With attributes, all N continue: return 0.
    (if (i32.ne (local.get $attrs) (i32.const 0))
      (then (return (i64.const 0))))
    ;; N is after the attributes; there are none here.
    (local.set $n (i32.load (i32.add (local.get $p) (i32.const 4))))
    (if (i32.gt_u (local.get $n) (i32.const 64))
      (then (local.set $n (i32.const 64))))
    ;; The list: u32 K, then K × (u32 36, the Reject verdict).
    (i32.store (i32.const 1024) (local.get $n))
    (local.set $out (i32.const 1028))
    (local.set $k (i32.const 0))
    (block $done
      (loop $entries
        (br_if $done (i32.eq (local.get $k) (local.get $n)))
        (i32.store (local.get $out) (i32.const 36))
        (memory.copy (i32.add (local.get $out) (i32.const 4)) (i32.const 16) (i32.const 36))
        (local.set $out (i32.add (local.get $out) (i32.const 40)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $entries)))
    (i64.or
      (i64.shl (i64.const 1024) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $out) (i32.const 1024)))))
)

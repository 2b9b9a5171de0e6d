;; resp3-reply.wat: a test module (ABI version 1) that answers PING with a RESP3 map naming
;; the session's protocol: `%1 +proto :N`, N from its context.
;;
;; It exports tessera_context_protocol, so the host ends each context with the protocol
;; byte; the host converts the RESP3 reply for a RESP2 session (`*2 +proto :2`). It reads
;; the byte assuming a connection without attributes: context = u64 id, u32 db, string
;; peer, string user, u32 attribute count (0), u8 protocol.
;;
;; Memory map: 16..28 the subscription list, 64..89 the Reply verdict (the digit at 82),
;; 4096.. the input.
(module
  (memory (export "memory") 1)

  ;; String list: u32 count 1, then u32 length 4 and "ping".
  (data (i32.const 16) "\01\00\00\00\04\00\00\00ping")
  ;; Verdict: u8 kind 2 (Reply), u32 length 16, "%1\r\n+proto\r\n:3\r\n", u32 0 attributes.
  (data (i32.const 64) "\02\10\00\00\00%1\0d\0a+proto\0d\0a:3\0d\0a\00\00\00\00")

  (func (export "tessera_abi_version") (result i32) (i32.const 1))
  (func (export "tessera_context_protocol") (result i32) (i32.const 1))

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

  (func (export "tessera_on_command") (param $ptr i32) (param $len i32) (result i64)
    (local $at i32)
    ;; past u64 id and u32 db: the peer's length, then the peer
    (local.set $at (i32.add (local.get $ptr) (i32.const 12)))
    (local.set $at (i32.add (i32.add (local.get $at) (i32.const 4)) (i32.load (local.get $at))))
    ;; the user's length, then the user
    (local.set $at (i32.add (i32.add (local.get $at) (i32.const 4)) (i32.load (local.get $at))))
    ;; the attribute count (0), then the protocol byte
    (local.set $at (i32.add (local.get $at) (i32.const 4)))
    (i32.store8 (i32.const 82) (i32.add (i32.const 48) (i32.load8_u (local.get $at))))
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 25)))
)

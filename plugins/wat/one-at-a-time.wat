;; one-at-a-time.wat: a hand-written module (ABI version 1, docs/plugin-abi.md) with the
;; batched hook tessera_on_commands and no tessera_on_command, deciding exactly ONE command
;; per call: its verdict list always has K = 1 entry, whatever N the host sent, so the host
;; calls again with the other N - 1 commands (the simplest valid use of the batch hook).
;;
;; Behaviour: a command with exactly 3 arguments (the name counts: `SET k v`, `GET a b`) is
;; rejected with `-ERR three arguments refused by one-at-a-time`; every other command
;; continues. No tessera_subscriptions (it sees every command), no tessera_input_reusable
;; (the host calls tessera_alloc before every call), no other hook.
;;
;; Memory map: 16..23 the Continue list, 64..124 the Reject list, 4096.. the input.
;; It trusts the host's input layout: a malformed input reads past the end and traps.
(module
  (memory (export "memory") 1)

  ;; Verdict list of one plain Continue: u32 K = 1, then the entry: u32 length 0.
  (data (i32.const 16) "\01\00\00\00\00\00\00\00")
  ;; Verdict list of one Reject: u32 K = 1, then the entry: u32 length 53, and the 53
  ;; bytes of the verdict: u8 kind 3 (Reject), u32 length 44, the message, u32 0
  ;; attributes.
  (data (i32.const 64)
    "\01\00\00\00"
    "\35\00\00\00"
    "\03\2c\00\00\00ERR three arguments refused by one-at-a-time\00\00\00\00")

  (func (export "tessera_abi_version") (result i32) (i32.const 1))

  ;; Returns 4096, after growing memory so that `size` bytes fit there.
  (func (export "tessera_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16))) ;; (4096 + size + 65535) / 65536
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (i32.const 4096))

  ;; Skips a string/bytes field at $p (u32 length + bytes); returns the next field.
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))

  ;; Skips the context at $p; returns the address of what follows it (here: u32 N).
  (func $skip_context (param $p i32) (result i32)
    (local $n i32)
    (local.set $p (i32.add (local.get $p) (i32.const 12)))  ;; u64 conn id, u32 db
    (local.set $p (call $skip (local.get $p)))               ;; peer
    (local.set $p (call $skip (local.get $p)))               ;; user
    (local.set $n (i32.load (local.get $p)))                 ;; attribute count
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $attrs
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $p (call $skip (call $skip (local.get $p))))  ;; key, value
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $attrs)))
    (local.get $p))

  ;; tessera_on_commands(ptr, len) -> i64. Input: context, u32 N (>= 1), N commands (each
  ;; u32 argc, then argc × (u8 flags, u32 length, bytes)). Decides the first command only:
  ;; (64 << 32) | 61, the Reject list, if its argc is 3, else (16 << 32) | 8, the Continue
  ;; list. (Returning 0 would mean "all N continue", which is not what it decided when
  ;; N > 1.)
  (func (export "tessera_on_commands") (param $ptr i32) (param $len i32) (result i64)
    (local $cmd i32)
    ;; skip the context and the u32 N: $cmd is the first command's u32 argc
    (local.set $cmd (i32.add (call $skip_context (local.get $ptr)) (i32.const 4)))
    (if (i32.eq (i32.load (local.get $cmd)) (i32.const 3))
      (then (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 61)))))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 8)))
)

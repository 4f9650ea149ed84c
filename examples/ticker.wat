;; Prints "tick N" ten times, sleeping 100 ms between lines, then exits.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "tick 0\0a")
  (func $sleep_100ms
    ;; One clock subscription at 0: monotonic clock, relative 100,000,000 ns.
    (i64.store (i32.const 0) (i64.const 0))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 100000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
  (func (export "_start") (local $i i32)
    (loop $again
      ;; The digit at offset 261 is '0' + i.
      (i32.store8 (i32.const 261) (i32.add (i32.const 48) (local.get $i)))
      (i32.store (i32.const 192) (i32.const 256))
      (i32.store (i32.const 196) (i32.const 7))
      (drop (call $fd_write (i32.const 1) (i32.const 192) (i32.const 1) (i32.const 200)))
      (call $sleep_100ms)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10))))))

//! Micro benchmarks of the pieces every request goes through (criterion):
//!
//! - `slot`: Codis's slot function on typical keys;
//! - `decode`: a pipelined read of 16 `GET key:000123` requests through `RequestDecoder`;
//! - `scan`: 16 bulk replies through `ReplyScanner` (3-byte and 1 KiB values);
//! - `lookup`: the command table lookup for common, container and unknown commands.
//!
//! Run: `cargo bench -p tessera-proxy --bench hot_path` (add `-- decode` to filter).
//! See benches/README.md for how these relate to the load benchmark.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tessera_proxy::command;
use tessera_proxy::resp::{ReplyScanner, RequestDecoder};
use tessera_proxy::slot;

/// `args` as one RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    tessera_proxy::resp::encode::command(&mut out, args);
    out.to_vec()
}

fn bench_slot(c: &mut Criterion) {
    let mut g = c.benchmark_group("slot");
    g.throughput(Throughput::Elements(1));
    let keys: &[(&str, &[u8])] = &[
        ("key:000123", b"key:000123"),
        ("hashtag", b"{user1000}.following"),
        ("64B", &[b'k'; 64]),
    ];
    for (name, key) in keys {
        g.bench_function(*name, |b| b.iter(|| slot::slot(black_box(key))));
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let one = encode(&[b"GET", b"key:000123"]);
    let pipeline: Vec<u8> = one.repeat(16);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(16));
    g.bench_function("16xGET_pipelined", |b| {
        let mut decoder = RequestDecoder::default();
        // The copy into a fresh buffer is setup, not measured: a session's read buffer is
        // filled by the socket read.
        b.iter_batched_ref(
            || BytesMut::from(&pipeline[..]),
            |buf| {
                let mut n = 0;
                while let Some(req) = decoder.decode(buf).expect("valid pipeline") {
                    black_box(&req);
                    n += 1;
                }
                assert_eq!(n, 16);
            },
            BatchSize::SmallInput,
        )
    });
    // MSET of 10,000 pairs (about 270 KiB) arriving 1 KiB at a time: the decoder must
    // resume where it stopped, not re-scan every argument on each read.
    let pairs: Vec<Vec<u8>> = std::iter::once(b"MSET".to_vec())
        .chain((0..20_000).map(|i| format!("k{i:06}").into_bytes()))
        .collect();
    let refs: Vec<&[u8]> = pairs.iter().map(Vec::as_slice).collect();
    let big = encode(&refs);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("MSET_10000_pairs_in_1KiB_reads", |b| {
        let mut decoder = RequestDecoder::default();
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(big.len());
            let mut n = 0;
            for chunk in big.chunks(1024) {
                buf.extend_from_slice(chunk);
                while let Some(req) = decoder.decode(&mut buf).expect("valid frame") {
                    black_box(&req);
                    n += 1;
                }
            }
            assert_eq!(n, 1);
        })
    });
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(16));
    for (name, len) in [("16x3B_bulk", 3usize), ("16x1KiB_bulk", 1024)] {
        let mut replies = Vec::new();
        for _ in 0..16 {
            replies.extend_from_slice(format!("${len}\r\n").as_bytes());
            replies.extend(std::iter::repeat_n(b'v', len));
            replies.extend_from_slice(b"\r\n");
        }
        g.bench_function(name, |b| {
            let mut scanner = ReplyScanner::default();
            b.iter(|| {
                let buf = black_box(&replies[..]);
                let mut off = 0;
                let mut n = 0;
                while let Some(len) = scanner.scan(&buf[off..]).expect("valid replies") {
                    off += len;
                    n += 1;
                }
                assert_eq!(n, 16);
            })
        });
    }
    g.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let cases: &[(&str, &[&str])] = &[
        ("GET", &["GET", "key:000123"]),
        ("get_lowercase", &["get", "key:000123"]),
        ("MSET", &["MSET", "a", "1", "b", "2"]),
        ("ZRANGEBYSCORE", &["ZRANGEBYSCORE", "z", "-inf", "+inf"]),
        ("OBJECT_ENCODING", &["OBJECT", "ENCODING", "k"]),
        ("unknown", &["NOSUCHCOMMAND", "k"]),
    ];
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    for (name, args) in cases {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(*a)).collect();
        g.bench_function(*name, |b| b.iter(|| command::lookup(black_box(&args))));
    }
    g.finish();
}

criterion_group!(benches, bench_slot, bench_decode, bench_scan, bench_lookup);
criterion_main!(benches);

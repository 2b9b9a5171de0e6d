//! Keys written through the proxy land on the group that Codis's slot function names
//! (computed here by the harness, not by the proxy's code), and only there.

use tessera_testkit as harness;

use harness::*;

#[test]
fn harness_slot_function_matches_codis_vectors() {
    assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32_ieee(b""), 0);
    assert_eq!(slot(b"foo"), 289);
    assert_eq!(slot(b"hello"), 646);
    assert_eq!(hashtag(b"{user1000}.following"), b"user1000");
    assert_eq!(slot(b"{user1000}.following"), 870);
    assert_eq!(hashtag(b"foo{}{bar}"), b"");
    assert_eq!(slot(b"foo{}{bar}"), 0);
    assert_eq!(hashtag(b"foo{{bar}}zap"), b"{bar");
    assert_eq!(slot(b"foo{{bar}}zap"), 313);
    assert_eq!(hashtag(b"foo{bar"), b"foo{bar");
    assert_eq!(hashtag(b"foo}bar{"), b"foo}bar{");
    assert_eq!(hashtag(b"a}b{c}d"), b"c");
}

/// 2,000 keys in several shapes: plain, `{tag}`, `{}` (hashes ""), `{{x}}` (hashes "{x"),
/// unbalanced braces (hash the whole key), binary bytes.
fn keys() -> Vec<Vec<u8>> {
    (0..2000)
        .map(|i| match i % 8 {
            0 | 1 => format!("plain:{i}").into_bytes(),
            2 => format!("{{user{}}}:profile:{i}", i % 37).into_bytes(),
            3 => format!("{{}}empty-tag:{i}").into_bytes(),
            4 => format!("{{{{x{}}}}}:double:{i}", i % 11).into_bytes(),
            5 => format!("open{{only:{i}").into_bytes(),
            6 => format!("close}}first{{t{}}}:{i}", i % 5).into_bytes(),
            _ => {
                let mut k = format!("bin:{i}:").into_bytes();
                k.extend_from_slice(&[0, 0xff, b'\r', b'\n', (i % 251) as u8]);
                k
            }
        })
        .collect()
}

fn value_of(key: &[u8]) -> Vec<u8> {
    let mut v = b"v:".to_vec();
    v.extend_from_slice(key);
    v
}

#[test]
fn keys_land_on_the_predicted_group_only() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let proxy = Proxy::start(&[&[&r1], &[&r2]]);
    let mut pc = proxy.conn();
    let keys = keys();

    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg(value_of(k));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut pc).expect("pipelined SETs via proxy");
    assert_eq!(replies.len(), keys.len());
    for (k, r) in keys.iter().zip(&replies) {
        assert_eq!(
            *r,
            redis::Value::Okay,
            "SET {:?} via proxy",
            String::from_utf8_lossy(k)
        );
    }

    // `{}` keys hash the empty string: slot 0, group 1.
    assert!(keys.iter().filter(|k| k.starts_with(b"{}")).count() > 100);
    for k in keys.iter().filter(|k| k.starts_with(b"{}")) {
        assert_eq!(slot(k), 0);
    }

    let servers = [&r1, &r2];
    let mut per_group = [0usize; 2];
    let mut direct: Vec<redis::Connection> = servers.iter().map(|s| s.conn()).collect();
    for (gi, conn) in direct.iter_mut().enumerate() {
        let group = gi as u32 + 1;
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(k);
        }
        let got: Vec<Option<Vec<u8>>> = pipe.query(conn).expect("direct GETs");
        for (k, v) in keys.iter().zip(got) {
            let owner = group_of_key(k, 2);
            let name = String::from_utf8_lossy(k);
            if owner == group {
                per_group[gi] += 1;
                assert_eq!(
                    v.as_deref(),
                    Some(&value_of(k)[..]),
                    "key {name:?} (slot {}) missing on its group {group} ({})",
                    slot(k),
                    servers[gi].addr()
                );
            } else {
                assert_eq!(
                    v,
                    None,
                    "key {name:?} (slot {}, group {owner}) also present on group {group} ({})",
                    slot(k),
                    servers[gi].addr()
                );
            }
        }
    }
    assert_eq!(per_group[0] + per_group[1], keys.len());
    assert!(
        per_group.iter().all(|&n| n > 300),
        "keys unevenly split: {per_group:?}"
    );

    // And read back through the proxy.
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("GET").arg(k);
    }
    let got: Vec<Option<Vec<u8>>> = pipe.query(&mut pc).expect("pipelined GETs via proxy");
    for (k, v) in keys.iter().zip(got) {
        assert_eq!(
            v.as_deref(),
            Some(&value_of(k)[..]),
            "GET {:?} via proxy",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
fn uneven_three_way_split_routes_by_slot_boundaries() {
    // Slots 0-340 / 341-681 / 682-1023: check keys right at the range boundaries.
    let r = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let proxy = Proxy::start(&[&[&r[0]], &[&r[1]], &[&r[2]]]);
    let mut pc = proxy.conn();
    for target in [0usize, 340, 341, 681, 682, 1023] {
        let key = find_key(&format!("edge{target}:"), |k| slot(k) == target);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("x")
            .query(&mut pc)
            .expect("SET via proxy");
        let owner = group_of_slot(target, 3) as usize;
        for (i, s) in r.iter().enumerate() {
            let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut s.conn()).unwrap();
            assert_eq!(
                got.is_some(),
                i + 1 == owner,
                "key {key} of slot {target} on group {} (owner {owner})",
                i + 1
            );
        }
    }
}

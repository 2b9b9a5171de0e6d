//! The hand-written classification: how the proxy handles each Redis 7.0 command and
//! subcommand. Built at compile time into a table indexed by id (`Spec::class`).
//!
//! Every command and subcommand of the generated table must be named exactly once below: a
//! missing, unknown or duplicate name fails the build (and the unit tests say which).

use super::table::{BY_ID, COUNT};
use super::{Class, FanOut, Local, Split};

/// Routed by their keys; all keys must hash to one slot, else CROSSSLOT.
const KEYED: &[&str] = &[
    // Keyspace. OBJECT, MEMORY, XGROUP and XINFO alone are containers: only reached without a
    // subcommand, which fails the arity check.
    "copy",
    "dump",
    "expire",
    "expireat",
    "expiretime",
    "move",
    "persist",
    "pexpire",
    "pexpireat",
    "pexpiretime",
    "pttl",
    "rename",
    "renamenx",
    "restore",
    "ttl",
    "type",
    "object",
    "object|encoding",
    "object|freq",
    "object|idletime",
    "object|refcount",
    "memory",
    "memory|usage",
    // Strings. MSETNX is atomic, so all its keys must be in one slot.
    "append",
    "decr",
    "decrby",
    "get",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "incr",
    "incrby",
    "incrbyfloat",
    "lcs",
    "msetnx",
    "psetex",
    "set",
    "setex",
    "setnx",
    "setrange",
    "strlen",
    "substr",
    // Bitmaps.
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "getbit",
    "setbit",
    // Hashes.
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hrandfield",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "hvals",
    // Lists (the blocking ones are Later).
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    // Sets and SORT. SORT's STORE key is found as Redis reads the options (`sort.rs`); BY/GET
    // patterns whose keys may be in another slot are refused by `check_options`.
    "sadd",
    "scard",
    "sdiff",
    "sdiffstore",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "smembers",
    "smismember",
    "smove",
    "sort",
    "sort_ro",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    "sunion",
    "sunionstore",
    // Sorted sets (the blocking ones are Later).
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
    // HyperLogLog.
    "pfadd",
    "pfcount",
    "pfmerge",
    // Geo.
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadius_ro",
    "georadiusbymember",
    "georadiusbymember_ro",
    "geosearch",
    "geosearchstore",
    // Streams. XREAD/XREADGROUP with BLOCK are refused by `check_options` (`xread.rs`).
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xgroup|create",
    "xgroup|createconsumer",
    "xgroup|delconsumer",
    "xgroup|destroy",
    "xgroup|setid",
    "xinfo",
    "xinfo|consumers",
    "xinfo|groups",
    "xinfo|stream",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    // Scripts and functions, routed by the keys after numkeys (with numkeys 0 there is no key:
    // the session decides). The script or library must be loaded on that group.
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// Split per group and the replies merged.
const SPLIT: &[(&str, Split)] = &[
    ("mget", Split::Mget),
    ("mset", Split::Mset),
    ("del", Split::SumIntegers),
    ("unlink", Split::SumIntegers),
    ("exists", Split::SumIntegers),
    ("touch", Split::SumIntegers),
];

/// Sent to every group (SCAN: to one group after another) and the replies merged.
const FAN_OUT: &[(&str, FanOut)] = &[
    ("dbsize", FanOut::Dbsize),
    ("keys", FanOut::Keys),
    ("flushdb", FanOut::Flushdb),
    ("flushall", FanOut::Flushall),
    ("lastsave", FanOut::Lastsave),
    ("scan", FanOut::Scan),
    ("config|get", FanOut::ConfigGet),
    ("config|set", FanOut::ConfigSet),
    ("config|resetstat", FanOut::ConfigResetstat),
    ("info", FanOut::Info),
    ("randomkey", FanOut::Randomkey),
    ("script|load", FanOut::ScriptLoad),
    ("script|exists", FanOut::ScriptExists),
    ("script|flush", FanOut::ScriptFlush),
    ("script|kill", FanOut::ScriptKill),
    ("function|load", FanOut::FunctionLoad),
    ("function|delete", FanOut::FunctionDelete),
    ("function|flush", FanOut::FunctionFlush),
    ("function|restore", FanOut::FunctionRestore),
    ("function|kill", FanOut::FunctionKill),
    ("function|list", FanOut::FunctionList),
    ("function|dump", FanOut::FunctionDump),
    ("function|stats", FanOut::FunctionStats),
    ("wait", FanOut::Wait),
];

/// Answered by the proxy itself.
const LOCAL: &[(&str, Local)] = &[
    ("auth", Local::Auth),
    ("select", Local::Select),
    ("ping", Local::Ping),
    ("echo", Local::Echo),
    ("quit", Local::Quit),
    ("hello", Local::Hello),
    ("client|setname", Local::ClientSetName),
    ("client|getname", Local::ClientGetName),
    ("client|id", Local::ClientId),
    ("client|info", Local::ClientInfo),
    ("client|list", Local::ClientList),
    ("client|kill", Local::ClientKill),
    ("client|no-evict", Local::ClientNoEvict),
    ("client|reply", Local::ClientReply),
];

/// Keyless, and any backend's answer is the proxy's answer.
const ANY_BACKEND: &[&str] = &[
    // COMMAND describes Redis's commands, not which ones the proxy supports.
    "command",
    "command|count",
    "command|docs",
    "command|getkeys",
    "command|getkeysandflags",
    "command|help",
    "command|info",
    "command|list",
    "time",
    "lolwut",
    // The HELP of a container with subcommands the proxy supports (now or later).
    "client|help",
    "memory|help",
    "object|help",
    "xgroup|help",
    "xinfo|help",
    "function|help",
    "script|help",
    "pubsub|help",
];

/// Not served yet (planned).
const LATER: &[&str] = &[
    // Transactions.
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    // Blocking commands.
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    // Pub/sub.
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "publish",
    "spublish",
    "pubsub",
    "pubsub|channels",
    "pubsub|numpat",
    "pubsub|numsub",
    "pubsub|shardchannels",
    "pubsub|shardnumsub",
    // Keyless commands that need every group: fan out and merge.
    "memory|stats",
    // Resets the connection's state (db, name, transactions, subscriptions): local once those
    // are.
    "reset",
];

/// Make no sense through the proxy: ask the backends directly.
const UNSUPPORTED: &[&str] = &[
    // Server administration and persistence. CONFIG, SCRIPT and FUNCTION alone are
    // containers: only reached without a subcommand, which fails the arity check.
    "config",
    "script",
    "function",
    "config|help",
    "config|rewrite",
    "shutdown",
    "save",
    "bgsave",
    "bgrewriteaof",
    "module",
    "module|help",
    "module|list",
    "module|load",
    "module|loadex",
    "module|unload",
    // Replication.
    "replicaof",
    "slaveof",
    "role",
    "sync",
    "psync",
    "replconf",
    "failover",
    "monitor",
    // Redis Cluster and its client protocol, and commands across databases or servers.
    "cluster",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|count-failure-reports",
    "cluster|countkeysinslot",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|getkeysinslot",
    "cluster|help",
    "cluster|info",
    "cluster|keyslot",
    "cluster|links",
    "cluster|meet",
    "cluster|myid",
    "cluster|nodes",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|shards",
    "cluster|slaves",
    "cluster|slots",
    "readonly",
    "readwrite",
    "asking",
    "restore-asking",
    "migrate",
    "swapdb",
    // Access control: the proxy has its own AUTH.
    "acl",
    "acl|cat",
    "acl|deluser",
    "acl|dryrun",
    "acl|genpass",
    "acl|getuser",
    "acl|help",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "acl|whoami",
    // Connection and client management other than the local ones: they would act on the
    // proxy's backend connections, not the client's.
    "client",
    "client|caching",
    "client|getredir",
    "client|pause",
    "client|tracking",
    "client|trackinginfo",
    "client|unblock",
    "client|unpause",
    // Per-server diagnostics.
    "latency",
    "latency|doctor",
    "latency|graph",
    "latency|help",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "latency|reset",
    "slowlog",
    "slowlog|get",
    "slowlog|help",
    "slowlog|len",
    "slowlog|reset",
    "memory|doctor",
    "memory|malloc-stats",
    "memory|purge",
    // Internal or debugging commands.
    "debug",
    "pfdebug",
    "pfselftest",
    "script|debug",
];

/// What a class means for a user, for docs/commands.md.
pub fn describe(class: Class) -> &'static str {
    match class {
        Class::Keyed => "routed to the group that owns its keys (all keys in one slot)",
        Class::Split(Split::Mget) => "split per group, values merged in key order",
        Class::Split(Split::Mset) => "split per group, OK when every group succeeds",
        Class::Split(Split::SumIntegers) => "split per group, integer replies summed",
        Class::FanOut(FanOut::Dbsize) => "sent to every group, integer replies summed",
        Class::FanOut(FanOut::Keys) => "sent to every group, arrays concatenated in group order",
        Class::FanOut(FanOut::Flushdb | FanOut::Flushall) => {
            "sent to every group, OK when every group succeeds; can be disabled in the config"
        }
        Class::FanOut(FanOut::Lastsave) => "sent to every group, the oldest (smallest) answered",
        Class::FanOut(FanOut::Scan) => "one cursor over every group, scanned one after another",
        Class::FanOut(FanOut::ConfigGet) => "answered by the first group (lowest id)",
        Class::FanOut(FanOut::ConfigSet | FanOut::ConfigResetstat) => {
            "sent to every group, OK when every group succeeds; off unless the config allows it"
        }
        Class::FanOut(FanOut::ScriptLoad | FanOut::FunctionLoad) => {
            "sent to every group, the reply when every group answers the same"
        }
        Class::FanOut(FanOut::ScriptExists) => "sent to every group, 1 where every group has it",
        Class::FanOut(
            FanOut::ScriptFlush
            | FanOut::FunctionDelete
            | FanOut::FunctionFlush
            | FanOut::FunctionRestore,
        ) => "sent to every group, OK when every group succeeds",
        Class::FanOut(FanOut::ScriptKill | FanOut::FunctionKill) => {
            "sent to every group, OK when a group killed a script"
        }
        Class::FanOut(FanOut::FunctionList | FanOut::FunctionDump | FanOut::FunctionStats) => {
            "answered by the first group (lowest id)"
        }
        Class::FanOut(FanOut::Wait) => {
            "sent to every group the session wrote to, the smallest count; timeout bounded"
        }
        Class::FanOut(FanOut::Randomkey) => {
            "every group's DBSIZE and RANDOMKEY; one key, its group chosen weighted by key count"
        }
        Class::FanOut(FanOut::Info) => {
            "the proxy's own sections, the keyspace summed over every group, the rest from the first group"
        }
        Class::Local(_) => "answered by the proxy",
        Class::AnyBackend => "answered by any one backend",
        Class::Unsupported => "not supported through the proxy",
        Class::Later => "not supported yet (planned)",
    }
}

/// The class of every spec, by id.
pub(super) static CLASSES: [Class; COUNT] = build();

/// Every name with its class, in the order of the groups above.
#[cfg(test)]
pub(super) fn entries() -> impl Iterator<Item = (&'static str, Class)> {
    let plain =
        |names: &'static [&'static str], class: Class| names.iter().map(move |&n| (n, class));
    plain(KEYED, Class::Keyed)
        .chain(SPLIT.iter().map(|&(n, s)| (n, Class::Split(s))))
        .chain(FAN_OUT.iter().map(|&(n, f)| (n, Class::FanOut(f))))
        .chain(LOCAL.iter().map(|&(n, l)| (n, Class::Local(l))))
        .chain(plain(ANY_BACKEND, Class::AnyBackend))
        .chain(plain(LATER, Class::Later))
        .chain(plain(UNSUPPORTED, Class::Unsupported))
}

const fn build() -> [Class; COUNT] {
    let mut found: [Option<Class>; COUNT] = [None; COUNT];
    assign_all(&mut found, KEYED, Class::Keyed);
    let mut i = 0;
    while i < SPLIT.len() {
        assign(&mut found, SPLIT[i].0, Class::Split(SPLIT[i].1));
        i += 1;
    }
    let mut i = 0;
    while i < FAN_OUT.len() {
        assign(&mut found, FAN_OUT[i].0, Class::FanOut(FAN_OUT[i].1));
        i += 1;
    }
    let mut i = 0;
    while i < LOCAL.len() {
        assign(&mut found, LOCAL[i].0, Class::Local(LOCAL[i].1));
        i += 1;
    }
    assign_all(&mut found, ANY_BACKEND, Class::AnyBackend);
    assign_all(&mut found, LATER, Class::Later);
    assign_all(&mut found, UNSUPPORTED, Class::Unsupported);

    let mut classes = [Class::Unsupported; COUNT];
    let mut id = 0;
    while id < COUNT {
        match found[id] {
            Some(class) => classes[id] = class,
            None => not_classified(BY_ID[id].name),
        }
        id += 1;
    }
    classes
}

const fn assign_all(found: &mut [Option<Class>; COUNT], names: &[&str], class: Class) {
    let mut i = 0;
    while i < names.len() {
        assign(found, names[i], class);
        i += 1;
    }
}

const fn assign(found: &mut [Option<Class>; COUNT], name: &str, class: Class) {
    let mut id = 0;
    while id < COUNT {
        if str_eq(BY_ID[id].name, name) {
            if found[id].is_some() {
                classified_twice(name);
            }
            found[id] = Some(class);
            return;
        }
        id += 1;
    }
    no_such_command(name);
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The build fails in one of these, naming the command.

const fn not_classified(name: &str) -> ! {
    panic!("{}", name)
}

const fn classified_twice(name: &str) -> ! {
    panic!("{}", name)
}

const fn no_such_command(name: &str) -> ! {
    panic!("{}", name)
}

//! The native Redis store: [`RedisStore`], an implementation of [`super::Store`] on one
//! Redis server through redis-rs, with the layout and the commit script of the
//! pure-Python store (`oaas_sdk/stores/redis.py`; docs/format.md, "Redis and Redis
//! Cluster"):
//!
//! - one hash per object under `<prefix>:{<cls_id>/<partition_id>/n:<u64>}` (numeric ids)
//!   or `.../s:<id>}` (string ids), fields: the entry names (codec bytes) plus
//!   `@version`, `@created`, `@updated` (decimal) and `@commit` (the last commit's token);
//! - a batch of commits is one `EVALSHA` of [`COMMIT_SCRIPT`] (the same file the Python
//!   store reads) per node, atomic on the server, checking every object's version and
//!   writing those that pass (a large batch: several calls, one pipeline);
//! - faults: a lost connection, a refused connection or a loading server is retried with
//!   backoff until `retry_deadline` has passed since the batch started, then the batch
//!   fails with a [`StoreError`]. A retry never applies a commit twice: after a broken
//!   exchange the store reads each object's `@version` and `@commit` to learn which of
//!   the unacknowledged commits landed, and sends only the others.
//!
//! The sync API of redis-rs fits the engine: the persister is a plain thread that writes
//! one batch at a time, so one connection (reopened after a fault) is all it needs.
//! A Redis Cluster goes through redis-rs's sync cluster client: a batch is one pipeline
//! per primary; a server error fails the cluster pipeline as a whole, and the commits
//! are then read back as after a broken exchange. TLS (`rediss://`) goes through rustls
//! (ring), verified against the CA certificates given (PEM) or the system's.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{ConnectionLike, ErrorKind, ServerErrorKind, Value};

use super::layout::{Meta, StoredObject, WriteRecord, KEY_NUM_ID, KEY_SEP, KEY_STR_ID};
use super::{RecordResult, Store, StoreError};
use crate::id::ObjectId;

/// The commit script (Lua), the very file the Python store loads.
pub const COMMIT_SCRIPT: &str = include_str!("../../../../oaas_sdk/stores/redis_commit.lua");

/// First part of every key when the URL names no `prefix`.
pub const DEFAULT_PREFIX: &str = "oaas";

const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis key of one object's hash (ASCII; the braces are the cluster hash tag).
pub fn object_key(prefix: &str, cls_id: &str, partition_id: u32, oid: ObjectId<&str>) -> String {
    match oid {
        ObjectId::Num(n) => format!("{prefix}:{{{cls_id}/{partition_id}/n:{n}}}"),
        ObjectId::Str(s) => format!("{prefix}:{{{cls_id}/{partition_id}/s:{s}}}"),
    }
}

/// The Redis key of the object whose store key (see [`super::layout::object_key`]) is
/// `key`; `None` for bytes that are not an object key.
pub fn object_key_of(prefix: &str, key: &[u8]) -> Option<String> {
    let sep = key.iter().position(|&b| b == KEY_SEP)?;
    let cls_id = std::str::from_utf8(&key[..sep]).ok()?;
    let rest = &key[sep + 1..];
    if rest.len() < 5 {
        return None;
    }
    let pid = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let body = &rest[5..];
    let oid = match rest[4] {
        KEY_NUM_ID => ObjectId::Num(u64::from_be_bytes(body.try_into().ok()?)),
        KEY_STR_ID => ObjectId::Str(std::str::from_utf8(body).ok()?),
        _ => return None,
    };
    Some(object_key(prefix, cls_id, pid, oid))
}

/// Inverse of [`object_key`], giving the store key; `None` for a key of another shape.
pub fn parse_object_key(prefix: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?;
    let inner = text
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')?;
    let mut parts = inner.splitn(3, '/');
    let cls_id = parts.next()?;
    let pid = parts.next()?;
    let rest = parts.next()?;
    if cls_id.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let oid = if let Some(n) = rest.strip_prefix("n:") {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        ObjectId::Num(n.parse().ok()?)
    } else {
        ObjectId::Str(rest.strip_prefix("s:")?)
    };
    Some(super::layout::object_key(cls_id, pid, oid))
}

/// SCAN pattern of the object keys whose store keys start with `prefix` (a class, or a
/// class and partition, as [`Store::scan`] receives them); `None` for another prefix.
fn scan_pattern(key_prefix: &str, prefix: &[u8]) -> Option<String> {
    let sep = prefix.iter().position(|&b| b == KEY_SEP)?;
    let cls_id = std::str::from_utf8(&prefix[..sep]).ok()?;
    let rest = &prefix[sep + 1..];
    let head = format!("{}:{{{}/", glob_escape(key_prefix), glob_escape(cls_id));
    match rest.len() {
        0 => Some(head + "*"),
        4 => Some(format!(
            "{head}{}/*",
            u32::from_be_bytes(rest.try_into().ok()?)
        )),
        _ => None,
    }
}

fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether retrying can help: the server is away, restarting or loading (not a
/// certificate the CA does not vouch for: that stays so).
fn transient(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        return false;
    }
    if e.code() == Some("OAASMOVED") {
        // The commit script met a hash its node does not serve (a stale slot map): it
        // wrote nothing; reconnecting learns the cluster's layout.
        return true;
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(k) => matches!(
            k,
            // NOSCRIPT out of a cluster pipeline (a primary that lost its scripts):
            // reconnecting loads the script everywhere, then the landed commits are read
            // back before the rest is sent again.
            ServerErrorKind::NoScript
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        ),
        _ => e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal(),
    }
}

/// A failed attempt: worth another (`Transient`) or final.
enum Failure {
    Transient(redis::RedisError),
    Final(StoreError),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Failure {
        Failure::Transient(e)
    }
}

impl From<redis::ParsingError> for Failure {
    fn from(e: redis::ParsingError) -> Failure {
        Failure::Final(StoreError(format!("unexpected reply: {e}")))
    }
}

/// Where the store connects: one server, or a cluster (through its startup nodes).
enum Target {
    One(redis::Client),
    Cluster(ClusterClient),
}

/// An open connection to the [`Target`].
enum Conn {
    One(redis::Connection),
    /// The cluster connection and the slot ranges of the primaries (`CLUSTER SLOTS` when
    /// it opened): `(first slot, last slot, primary's index)`, sorted.
    Cluster(Box<ClusterConnection>, Vec<(u16, u16, usize)>),
}

impl Conn {
    fn as_like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::One(c) => c,
            Conn::Cluster(c, _) => c.as_mut(),
        }
    }

    /// The group of a Redis key: the index of the primary that serves its slot (0 on one
    /// server; a slot no known primary serves gets a group of its own, and its call
    /// fails and is retried after reconnecting).
    fn group_of(&self, key: &str) -> usize {
        match self {
            Conn::One(_) => 0,
            Conn::Cluster(_, slots) => {
                let slot = key_slot(key.as_bytes());
                let at = slots.partition_point(|&(_, last, _)| last < slot);
                match slots.get(at) {
                    Some(&(first, _, node)) if first <= slot => node,
                    _ => usize::MAX - usize::from(slot),
                }
            }
        }
    }
}

/// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the key).
fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % 16384
}

/// At most this many commits go into one script call (more: several calls, pipelined),
/// and at most about [`CALL_MAX_BYTES`] bytes of entry values; the same bounds as the
/// Python store's (`CALL_MAX_COMMITS`, `CALL_MAX_BYTES`).
const CALL_MAX_COMMITS: usize = 1024;
const CALL_MAX_BYTES: usize = 4 << 20;

/// A store on one Redis server or a Redis Cluster. See the module documentation.
pub struct RedisStore {
    name: String,
    prefix: String,
    target: Target,
    /// The connection of the writes (the persister's), and one of the reads and scans,
    /// so that a load does not wait behind a batch being written (or retried).
    conn: Mutex<Option<Conn>>,
    read_conn: Mutex<Option<Conn>>,
    sha: String,
    retry_deadline: Duration,
    /// `WAIT` after each batch for this many replicas (0: no WAIT), at most this long.
    wait_replicas: u32,
    wait_timeout: Duration,
    closed: AtomicBool,
    tokens: AtomicU64,
    random: RandomState,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .finish()
    }
}

impl RedisStore {
    /// Open a store on the server of `url` (`redis://[[user]:password@]host:port[/db]`,
    /// no query: the caller takes out `prefix`) or, with `cluster`, on the Redis Cluster
    /// whose startup nodes are the `redis://[[user]:password@]host:port` URLs of `url`,
    /// one per line; keys under `prefix`. `name` names the store in messages (without
    /// the password). Connects (retried until `retry_deadline`) and loads the commit
    /// script (on every node of a cluster). Errors: a malformed URL, or a server that
    /// cannot be reached (or refuses the password) within the deadline.
    ///
    /// `ca_pem`: CA certificates (PEM) that verify a `rediss://` server (`None`: the
    /// system's). `wait`: `(replicas, timeout)`: after the script calls of a batch, `WAIT`
    /// on every node written, on the connection that wrote; fewer replicas than that is
    /// retried (the commits confirmed and waited for again) until the retry deadline,
    /// then an error (docs/format.md, "Durability on Redis").
    pub fn open(
        url: &str,
        cluster: bool,
        prefix: &str,
        name: String,
        retry_deadline: Duration,
        ca_pem: Option<Vec<u8>>,
        wait: Option<(u32, Duration)>,
    ) -> Result<RedisStore, StoreError> {
        let bad = |e: redis::RedisError| StoreError(format!("{name}: bad URL: {e}"));
        if url.starts_with("rediss://") {
            // Fails only when a provider is installed already: then that one serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca_pem.clone(),
        };
        let target = if cluster {
            let nodes: Vec<&str> = url.lines().filter(|l| !l.is_empty()).collect();
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(IO_TIMEOUT)
                // Our loop retries (with the deadline and the read-back of landed
                // commits); the client's own retries stay short.
                .retries(2);
            if ca_pem.is_some() {
                builder = builder.certs(certs());
            }
            Target::Cluster(builder.build().map_err(bad)?)
        } else if ca_pem.is_some() {
            Target::One(redis::Client::build_with_tls(url, certs()).map_err(bad)?)
        } else {
            Target::One(redis::Client::open(url).map_err(bad)?)
        };
        let store = RedisStore {
            name,
            prefix: prefix.to_owned(),
            target,
            conn: Mutex::new(None),
            read_conn: Mutex::new(None),
            sha: redis::Script::new(COMMIT_SCRIPT).get_hash().to_owned(),
            retry_deadline,
            wait_replicas: wait.map_or(0, |w| w.0),
            wait_timeout: wait.map_or(Duration::from_secs(1), |w| w.1),
            closed: AtomicBool::new(false),
            tokens: AtomicU64::new(0),
            random: RandomState::new(),
        };
        store.retrying(&store.conn, "connect", |_| Ok(()))?;
        Ok(store)
    }

    /// Name for messages, e.g. `"redis store at redis://127.0.0.1:6379/0"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop the connection; later calls fail. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        *lock(&self.conn) = None;
        *lock(&self.read_conn) = None;
    }

    /// A random token per commit (stored by the script in `@commit`).
    fn token(&self) -> String {
        let mut h = self.random.build_hasher();
        h.write_u64(self.tokens.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        format!("{:016x}", h.finish())
    }

    /// `f(connection)` on the connection in `slot` (opened when there is none), retried
    /// with exponential backoff on transient errors until `retry_deadline` has passed;
    /// then a [`StoreError`] naming the last error.
    fn retrying<T>(
        &self,
        slot: &Mutex<Option<Conn>>,
        what: &str,
        mut f: impl FnMut(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.retry_deadline;
        let mut delay = BACKOFF_FIRST;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(StoreError(format!("{}: the store is closed", self.name)));
            }
            let mut guard = lock(slot);
            let result = match &mut *guard {
                Some(conn) => f(conn),
                None => match self.connect() {
                    Ok(mut conn) => {
                        let r = f(&mut conn);
                        *guard = Some(conn);
                        r
                    }
                    Err(e) => Err(Failure::Transient(e)),
                },
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(e)) => e,
            };
            if !transient(&err) {
                return Err(StoreError(format!("{}: {what} failed: {err}", self.name)));
            }
            *guard = None; // reconnect next time: the connection may be broken mid-reply
            drop(guard);
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError(format!(
                    "{}: {what} failed: {err} (retried for {:.3} s, store_retry_deadline_s)",
                    self.name,
                    self.retry_deadline.as_secs_f64()
                )));
            }
            std::thread::sleep(delay.min(deadline - now));
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// A new connection, with the commit script loaded (on every node of a cluster).
    fn connect(&self) -> redis::RedisResult<Conn> {
        let mut conn = match &self.target {
            Target::One(client) => {
                let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::One(conn)
            }
            Target::Cluster(client) => {
                let mut conn = client.get_connection()?;
                let slots = slot_ranges(&mut conn)?;
                Conn::Cluster(Box::new(conn), slots)
            }
        };
        load_script(&mut conn)?;
        Ok(conn)
    }

    /// The object stored under store key `object_key`, or `None`.
    pub fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        let key = object_key_of(&self.prefix, object_key)
            .ok_or_else(|| StoreError(format!("{}: read of {what}: bad key", self.name)))?;
        let raw: Vec<(Vec<u8>, Vec<u8>)> =
            self.retrying(&self.read_conn, &format!("read of {what}"), |conn| {
                Ok(redis::cmd("HGETALL").arg(&key).query(conn.as_like())?)
            })?;
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            StoreError(format!(
                "{}: {key} is not an object record ({why})",
                self.name
            ))
        };
        let mut meta = Meta {
            version: 0,
            created_ms: 0,
            updated_ms: 0,
        };
        let mut have_version = false;
        let mut entries = Vec::with_capacity(raw.len());
        for (field, value) in raw {
            let num = |v: &[u8]| -> Option<i64> { std::str::from_utf8(v).ok()?.parse().ok() };
            match field.as_slice() {
                b"@version" => {
                    meta.version = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| bad("@version"))?;
                    have_version = true;
                }
                b"@created" => meta.created_ms = num(&value).ok_or_else(|| bad("@created"))?,
                b"@updated" => meta.updated_ms = num(&value).ok_or_else(|| bad("@updated"))?,
                b"@commit" => {}
                _ => {
                    let name = String::from_utf8(field).map_err(|_| bad("field name"))?;
                    entries.push((name, value));
                }
            }
        }
        if !have_version {
            return Err(bad("no @version"));
        }
        Ok(Some(StoredObject { meta, entries }))
    }

    /// Store keys of the stored objects starting with `prefix` (a class, or a class and
    /// a partition), in key order. SCANs the keyspace.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let pattern = scan_pattern(&self.prefix, prefix)
            .ok_or_else(|| StoreError(format!("{}: scan: bad prefix", self.name)))?;
        let raw: Vec<Vec<u8>> = self.retrying(&self.read_conn, "scan", |conn| {
            let mut out = Vec::new();
            match conn {
                Conn::One(c) => scan_node(&mut |cmd| c.req_command(cmd), &pattern, &mut out)?,
                Conn::Cluster(c, _) => {
                    for (host, port) in primaries(c)? {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host,
                            port,
                        });
                        let mut run = |cmd: &redis::Cmd| c.route_command(cmd, routing.clone());
                        scan_node(&mut run, &pattern, &mut out)?;
                    }
                }
            }
            Ok(out)
        })?;
        let mut keys: Vec<Vec<u8>> = raw
            .iter()
            .filter_map(|k| parse_object_key(&self.prefix, k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Apply `records` in order: one script call per node (per [`CALL_MAX_COMMITS`]
    /// commits), pipelined. One result per
    /// record (`Err`: the conflict's message); `Err` once the server has been unreachable
    /// for the retry deadline (each commit then landed whole or not at all).
    pub fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        let mut results: Vec<RecordResult> = vec![Ok(()); records.len()];
        let tokens: Vec<String> = records.iter().map(|_| self.token()).collect();
        let keys: Vec<String> = records
            .iter()
            .map(|r| {
                let id = &r.identity;
                object_key(
                    &self.prefix,
                    &id.cls_id,
                    id.partition_id,
                    id.object_id.as_deref(),
                )
            })
            .collect();
        let mut todo: Vec<usize> = (0..records.len()).collect();
        // Commits found landed by a read-back: with WAIT they are sent again (the script
        // confirms them and rewrites their token, which the replicas must then ack).
        let mut confirm: Vec<usize> = Vec::new();
        let mut in_doubt = false;
        let what = format!("write of {} commits", records.len());
        self.retrying(&self.conn, &what, |conn| {
            if in_doubt {
                let pending = merged(&todo, &confirm);
                todo = landed(conn, records, &keys, &tokens, &pending)?;
                if self.wait_replicas > 0 {
                    confirm = pending
                        .iter()
                        .copied()
                        .filter(|i| todo.binary_search(i).is_err())
                        .collect();
                }
            }
            let send = merged(&todo, &confirm);
            if send.is_empty() {
                return Ok(());
            }
            in_doubt = true; // from here on a break leaves the outcome unknown
            let again = self.send(conn, records, &keys, &tokens, &send, &confirm, &mut results)?;
            if !again.is_empty() {
                // A (restarted) server without the script: load it and send those again.
                load_script(conn)?;
                let again = self.send(
                    conn,
                    records,
                    &keys,
                    &tokens,
                    &again,
                    &confirm,
                    &mut results,
                )?;
                if !again.is_empty() {
                    return Err(Failure::Final(StoreError(format!(
                        "{}: the commit script cannot be loaded",
                        self.name
                    ))));
                }
            }
            in_doubt = false;
            todo.clear();
            confirm.clear();
            Ok(())
        })?;
        Ok(results)
    }

    /// The script calls for `todo`: the commits grouped by the node that serves their
    /// hash (one group on one server), in batch order within a group, a group cut into
    /// calls of at most [`CALL_MAX_COMMITS`] commits and about [`CALL_MAX_BYTES`] bytes;
    /// `(group, indices, command)` each, a group's calls one after the other.
    fn calls(
        &self,
        conn: &Conn,
        records: &[&WriteRecord],
        keys: &[String],
        tokens: &[String],
        todo: &[usize],
    ) -> Vec<(usize, Vec<usize>, redis::Cmd)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &i in todo {
            let g = conn.group_of(&keys[i]);
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((g, vec![i])),
            }
        }
        let mut calls = Vec::new();
        for (g, idx) in groups {
            for part in split_calls(&idx, |i| {
                records[i].entries.iter().map(|(_, v)| v.len()).sum()
            }) {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&self.sha)
                    .arg(1)
                    .arg(&keys[part[0]])
                    .arg(part.len());
                for &i in &part {
                    let r = records[i];
                    cmd.arg(&keys[i])
                        .arg(r.expected_version)
                        .arg(r.expected_version + 1)
                        .arg(r.time_ms)
                        .arg(if r.delete_object { "d" } else { "w" })
                        .arg(&tokens[i])
                        .arg(r.entries.len())
                        .arg(r.deletes.len());
                    for (name, value) in r.entries.iter() {
                        cmd.arg(name).arg(value);
                    }
                    for name in &r.deletes {
                        cmd.arg(name);
                    }
                }
                calls.push((g, part, cmd));
            }
        }
        calls
    }

    /// The batch-script calls for `todo` (see [`Self::calls`]): one pipeline on one
    /// server, the calls of each node on its connection on a cluster; with
    /// `wait_replicas`, then `WAIT` on every node written (on the connection that
    /// wrote). Fills `results` (`confirm`: commits known to have landed, whose replies
    /// only confirm them); returns the indices refused with NOSCRIPT (not executed).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        conn: &mut Conn,
        records: &[&WriteRecord],
        keys: &[String],
        tokens: &[String],
        todo: &[usize],
        confirm: &[usize],
        results: &mut [RecordResult],
    ) -> Result<Vec<usize>, Failure> {
        let calls = self.calls(conn, records, keys, tokens, todo);
        let wait = (self.wait_replicas > 0).then(|| {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(self.wait_replicas)
                .arg(self.wait_timeout.as_millis().max(1) as u64);
            cmd
        });
        let mut replies: Vec<Value> = Vec::with_capacity(calls.len());
        let mut acks: Vec<(String, Value)> = Vec::new();
        match conn {
            Conn::One(c) => {
                let mut pipe = redis::pipe();
                for (_, _, cmd) in &calls {
                    pipe.add_command(cmd.clone());
                }
                let n = calls.len() + usize::from(wait.is_some());
                if let Some(w) = &wait {
                    pipe.add_command(w.clone());
                }
                replies = c.req_packed_commands(&pipe.get_packed_pipeline(), 0, n)?;
                if replies.len() != n {
                    return Err(bad_reply(&self.name, &replies));
                }
                if wait.is_some() {
                    let ack = replies.pop().unwrap_or(Value::Nil);
                    acks.push(("the server".to_owned(), ack));
                }
            }
            Conn::Cluster(c, _) => {
                for (at, (g, idx, cmd)) in calls.iter().enumerate() {
                    // Routed by KEYS[1]; a server error comes back as a reply.
                    replies.push(match c.req_command(cmd) {
                        Ok(v) => v,
                        Err(e) => match e.try_into() {
                            Ok(server) => Value::ServerError(server),
                            Err(e) => return Err(Failure::Transient(e)),
                        },
                    });
                    let last_of_node = calls.get(at + 1).is_none_or(|next| next.0 != *g);
                    if let (Some(w), true) = (&wait, last_of_node) {
                        let key = &keys[idx[0]];
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                            Route::with_key(key, SlotAddr::Master),
                        ));
                        acks.push((format!("the node of {key}"), c.route_command(w, route)?));
                    }
                }
            }
        }
        for (node, ack) in acks {
            if let Value::ServerError(e) = ack {
                return Err(Failure::Transient(e.into()));
            }
            let acked = int_of(&ack).unwrap_or(-1);
            if acked < i64::from(self.wait_replicas) {
                return Err(Failure::Transient(redis::RedisError::from((
                    ErrorKind::Io,
                    "WAIT: too few replicas acknowledged",
                    format!(
                        "{acked} of {} replicas of {node} acknowledged within {:.3} s \
                         (store_wait_timeout_s)",
                        self.wait_replicas,
                        self.wait_timeout.as_secs_f64()
                    ),
                ))));
            }
        }
        let mut again = Vec::new();
        for ((_, idx, _), reply) in calls.iter().zip(replies) {
            match reply {
                Value::ServerError(e) => {
                    let e = redis::RedisError::from(e);
                    if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
                        again.extend_from_slice(idx);
                    } else if transient(&e) {
                        return Err(Failure::Transient(e));
                    } else {
                        return Err(Failure::Final(StoreError(format!(
                            "{}: commit of {} failed: {e}",
                            self.name, records[idx[0]].identity
                        ))));
                    }
                }
                Value::Array(items) if items.len() % 2 == 0 => {
                    // The conflicts: (commit number from 1, version found) pairs.
                    for &i in idx {
                        results[i] = Ok(());
                    }
                    for pair in items.chunks_exact(2) {
                        let (Some(c), Some(found)) = (int_of(&pair[0]), int_of(&pair[1])) else {
                            return Err(bad_reply(&self.name, &pair));
                        };
                        let Some(&i) = usize::try_from(c - 1).ok().and_then(|c| idx.get(c)) else {
                            return Err(bad_reply(&self.name, &pair));
                        };
                        if confirm.binary_search(&i).is_err() {
                            // (one that landed before, read back, stays Ok)
                            results[i] = Err(records[i].conflict_message(found as u64));
                        }
                    }
                }
                other => return Err(bad_reply(&self.name, &other)),
            }
        }
        again.sort_unstable();
        Ok(again)
    }
}

/// The sorted union of two sorted index lists.
fn merged(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = a.iter().chain(b).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `idx` cut into runs of at most [`CALL_MAX_COMMITS`] commits whose `weight`s (bytes)
/// add up to at most [`CALL_MAX_BYTES`] (a heavier commit alone in its run).
fn split_calls(idx: &[usize], weight: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut part: Vec<usize> = Vec::new();
    let mut size = 0;
    for &i in idx {
        let w = weight(i);
        if !part.is_empty() && (part.len() >= CALL_MAX_COMMITS || size + w > CALL_MAX_BYTES) {
            out.push(std::mem::take(&mut part));
            size = 0;
        }
        part.push(i);
        size += w;
    }
    if !part.is_empty() {
        out.push(part);
    }
    out
}

fn bad_reply(name: &str, reply: &dyn fmt::Debug) -> Failure {
    Failure::Final(StoreError(format!(
        "{name}: unexpected reply of the commit script: {reply:?}"
    )))
}

/// An integer reply (or a decimal string reply) as i64.
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// After a broken exchange: which of `todo` landed (their results stay `Ok`); returns
/// the others. Commits of one object land in order, so the object's stored token names
/// the last of its commits that landed.
fn landed(
    conn: &mut Conn,
    records: &[&WriteRecord],
    keys: &[String],
    tokens: &[String],
    todo: &[usize],
) -> Result<Vec<usize>, Failure> {
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for &i in todo {
        let k = keys[i].as_str();
        by_key
            .entry(k)
            .or_insert_with(|| {
                order.push(k);
                Vec::new()
            })
            .push(i);
    }
    let cmds = order
        .iter()
        .map(|k| {
            let mut c = redis::cmd("HMGET");
            c.arg(*k).arg("@version").arg("@commit");
            c
        })
        .collect();
    let mut stored: Vec<(Option<u64>, Option<String>)> = Vec::with_capacity(order.len());
    for v in pipeline(conn, cmds)? {
        if let Value::ServerError(e) = v {
            return Err(Failure::Transient(e.into()));
        }
        stored.push(redis::from_redis_value(v)?);
    }
    let mut rest = Vec::new();
    for (k, (version, token)) in order.iter().zip(stored) {
        let idx = &by_key[k];
        let mut upto: Option<usize> = None;
        for (pos, &i) in idx.iter().enumerate() {
            let r = records[i];
            if r.delete_object && version.is_none() {
                upto = Some(pos); // gone: this delete (or a later one) landed
            } else if token.as_deref() == Some(tokens[i].as_str())
                && version == Some(r.expected_version + 1)
            {
                upto = Some(pos);
            }
        }
        let first = upto.map_or(0, |p| p + 1);
        rest.extend_from_slice(&idx[first..]);
    }
    rest.sort_unstable();
    Ok(rest)
}

fn lock(slot: &Mutex<Option<Conn>>) -> MutexGuard<'_, Option<Conn>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Send `cmds` as one pipeline (one per node on a cluster); one reply per command, a
/// server error as [`Value::ServerError`] on one server. A cluster pipeline fails as a
/// whole on a server error (other commands may have run: the caller reads back).
fn pipeline(conn: &mut Conn, cmds: Vec<redis::Cmd>) -> Result<Vec<Value>, Failure> {
    let n = cmds.len();
    let replies = match conn {
        Conn::One(c) => {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            c.req_packed_commands(&pipe.get_packed_pipeline(), 0, n)?
        }
        Conn::Cluster(c, _) => {
            let mut pipe = redis::cluster::cluster_pipe();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            pipe.query::<Vec<Value>>(c)?
        }
    };
    if replies.len() != n {
        return Err(Failure::Final(StoreError(format!(
            "{} replies to a pipeline of {n} commands",
            replies.len()
        ))));
    }
    Ok(replies)
}

/// SCRIPT LOAD the commit script (on every node of a cluster).
fn load_script(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(COMMIT_SCRIPT)
        .query::<Value>(conn.as_like())?;
    Ok(())
}

/// The slot ranges of a cluster's primaries (`CLUSTER SLOTS`): `(first, last, index)`
/// sorted by slot, the index into the primaries' `(host, port)` list.
#[allow(clippy::type_complexity)]
fn cluster_slots(
    conn: &mut ClusterConnection,
) -> redis::RedisResult<(Vec<(u16, u16, usize)>, Vec<(String, u16)>)> {
    let slots: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(conn)?;
    let mut nodes: Vec<(String, u16)> = Vec::new();
    let mut ranges = Vec::new();
    for range in slots {
        // [start, end, [host, port, id, ...], replicas...]
        if let (Some(first), Some(last), Some(Value::Array(node))) =
            (range.first(), range.get(1), range.get(2))
        {
            if let (Some(host), Some(port)) = (node.first(), node.get(1)) {
                let host: String = redis::from_redis_value_ref(host)?;
                let port: u16 = redis::from_redis_value_ref(port)?;
                let at = match nodes.iter().position(|n| n.0 == host && n.1 == port) {
                    Some(at) => at,
                    None => {
                        nodes.push((host, port));
                        nodes.len() - 1
                    }
                };
                let first: u16 = redis::from_redis_value_ref(first)?;
                let last: u16 = redis::from_redis_value_ref(last)?;
                ranges.push((first, last, at));
            }
        }
    }
    ranges.sort_unstable();
    Ok((ranges, nodes))
}

/// The slot ranges of the primaries, see [`cluster_slots`].
fn slot_ranges(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(u16, u16, usize)>> {
    Ok(cluster_slots(conn)?.0)
}

/// The (host, port) of every primary of a cluster (`CLUSTER SLOTS`).
fn primaries(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    Ok(cluster_slots(conn)?.1)
}

/// SCAN the keys matching `pattern` on one server into `out`; `run` sends a command to it.
fn scan_node(
    run: &mut dyn FnMut(&redis::Cmd) -> redis::RedisResult<Value>,
    pattern: &str,
    out: &mut Vec<Vec<u8>>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(run(&cmd)?)?;
        out.extend(keys);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl Store for RedisStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(
        &self,
        object_key: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        RedisStore::read(self, object_key, what)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        RedisStore::scan(self, prefix)
    }

    fn write_batch(&self, records: &[&WriteRecord]) -> Result<Vec<RecordResult>, StoreError> {
        RedisStore::write_batch(self, records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = super::super::layout::object_key("Counter", 7, ObjectId::Num(42));
        let r = object_key_of("oaas", &k).expect("key");
        assert_eq!(r, "oaas:{Counter/7/n:42}");
        assert_eq!(parse_object_key("oaas", r.as_bytes()), Some(k));
        let k = super::super::layout::object_key("a.b", 0, ObjectId::Str("x:y"));
        let r = object_key_of("p", &k).expect("key");
        assert_eq!(r, "p:{a.b/0/s:x:y}");
        assert_eq!(parse_object_key("p", r.as_bytes()), Some(k));
        assert_eq!(parse_object_key("p", b"p:{a/x/n:1}"), None);
        assert_eq!(parse_object_key("p", b"q:{a/1/n:1}"), None);
    }

    #[test]
    fn scan_patterns() {
        assert_eq!(
            scan_pattern("oaas", b"C*\x00").as_deref(),
            Some("oaas:{C\\*/*")
        );
        assert_eq!(
            scan_pattern("oaas", b"C\x00\x00\x00\x00\x05").as_deref(),
            Some("oaas:{C/5/*")
        );
    }

    #[test]
    fn script_is_the_python_stores() {
        assert!(COMMIT_SCRIPT.starts_with("#!lua flags=allow-cross-slot-keys\n"));
        assert!(COMMIT_SCRIPT.contains("redis.pcall('HMGET', key, '@version', '@commit')"));
        assert!(COMMIT_SCRIPT.trim_end().ends_with("return out"));
    }

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // CLUSTER KEYSLOT of Redis 7.0.
        assert_eq!(key_slot(b"{a}"), 15495);
        assert_eq!(key_slot(b"x{b}y"), 3300);
        assert_eq!(key_slot(b"{}c"), 2617);
        assert_eq!(key_slot(b"foo"), 12182);
    }

    #[test]
    fn calls_are_cut_by_count_and_bytes() {
        let idx: Vec<usize> = (0..2500).collect();
        let parts = split_calls(&idx, |_| 10);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [1024, 1024, 452]
        );
        let parts = split_calls(&[0, 1, 2], |i| if i == 1 { CALL_MAX_BYTES + 1 } else { 1 });
        assert_eq!(parts, [vec![0], vec![1], vec![2]]);
    }
}

//! The stores behind `wasi:keyvalue`: a bucket is a name within one service,
//! and every operation a guest makes is an [`Op`] on it, answered at once
//! (memory, reads on disk) or later (writes on disk, Redis) — a guest waiting
//! for a later answer is parked, never holding its worker.
//!
//! - [`memory`]: in this process, shared by the runtime's containers;
//! - [`disk`]: a redb database in a folder, its writes committed in groups;
//! - [`redis`]: a Redis server several hosts share, over a few connections.
//!
//! Every store keeps the same bounds ([`Limits`]): key and value sizes and
//! keys per bucket everywhere, bytes per service in memory and on disk.

mod disk;
mod memory;
mod redis;

use crate::settings::{KeyValueStore, WasmConfig};
use futures_channel::oneshot;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why an operation failed, in words (a bound, the store is down, a value
/// is not a number): the guest gets it as the interface's `error.other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(pub(crate) String);

/// The bounds every store keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) key_bytes: usize,
    pub(crate) value_bytes: usize,
    pub(crate) keys: u64,
    pub(crate) service_bytes: u64,
}

/// Bytes an entry costs besides its bucket name, key and value.
pub(crate) const ENTRY_OVERHEAD: u64 = 64;

/// The most keys one `list-keys` call returns; its cursor asks for the next ones.
pub(crate) const PAGE: usize = 1000;

impl Limits {
    pub(crate) fn of(config: &WasmConfig) -> Self {
        Limits {
            key_bytes: config.keyvalue_max_key_bytes,
            value_bytes: config.keyvalue_max_value_bytes,
            keys: config.keyvalue_max_keys,
            service_bytes: config.keyvalue_max_service_bytes,
        }
    }

    /// Refuses a key (or bucket name) longer than the bound.
    pub(crate) fn key(&self, key: &str) -> Result<(), Error> {
        if key.len() > self.key_bytes {
            return Err(too_large("key", key.len(), self.key_bytes));
        }
        Ok(())
    }

    /// Refuses a value larger than the bound, by its length alone.
    pub(crate) fn value(&self, len: usize) -> Result<(), Error> {
        if len > self.value_bytes {
            return Err(too_large("value", len, self.value_bytes));
        }
        Ok(())
    }
}

fn too_large(what: &str, len: usize, limit: usize) -> Error {
    Error(format!(
        "the {what} is {len} bytes, over the store's limit of {limit} bytes"
    ))
}

/// What an entry costs against its service's byte bound.
pub(crate) fn cost(bucket: &str, key: &str, value: usize) -> u64 {
    bucket.len() as u64 + key.len() as u64 + value as u64 + ENTRY_OVERHEAD
}

/// One bucket of one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Bucket {
    pub(crate) service: Arc<str>,
    pub(crate) name: Arc<str>,
}

/// One operation on a bucket.
#[derive(Debug)]
pub(crate) enum Op {
    Get(String),
    Set(String, Vec<u8>),
    Delete(String),
    Exists(String),
    /// Keys from offset `cursor`, at most [`PAGE`] of them.
    ListKeys(u64),
    /// Adds to the decimal number stored at the key (0 if absent).
    Increment(String, i64),
    /// Sets the key to the value if its value is still `old` (`None`: if
    /// it is still absent); answers whether it did.
    Swap(String, Option<Vec<u8>>, Vec<u8>),
    GetMany(Vec<String>),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

impl Op {
    /// The operation's name in the metrics (`op` label).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Set(..) => "set",
            Op::Delete(_) => "delete",
            Op::Exists(_) => "exists",
            Op::ListKeys(_) => "list_keys",
            Op::Increment(..) => "increment",
            Op::Swap(..) => "swap",
            Op::GetMany(_) => "get_many",
            Op::SetMany(_) => "set_many",
            Op::DeleteMany(_) => "delete_many",
        }
    }

    /// Whether the operation only reads.
    fn reads_only(&self) -> bool {
        matches!(
            self,
            Op::Get(_) | Op::Exists(_) | Op::ListKeys(_) | Op::GetMany(_)
        )
    }
}

/// What an operation answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Value(Option<Vec<u8>>),
    Done,
    Bool(bool),
    /// Keys, and the cursor of the next page if there is one.
    Keys(Vec<String>, Option<u64>),
    Number(i64),
    Values(Vec<Option<(String, Vec<u8>)>>),
}

pub(crate) type Reply = Result<Answer, Error>;

/// An answer now, or one a store's thread sends later.
pub(crate) enum Pending {
    Ready(Reply),
    Later(oneshot::Receiver<Reply>),
}

impl Pending {
    pub(crate) async fn answer(self) -> Reply {
        match self {
            Pending::Ready(reply) => reply,
            Pending::Later(receiver) => receiver
                .await
                .unwrap_or_else(|_| Err(Error("the key-value store has shut down".into()))),
        }
    }
}

/// A store of buckets.
pub(crate) trait Store: Send + Sync {
    fn submit(&self, bucket: &Bucket, op: Op) -> Pending;
}

/// Opens the store the runtime's settings name.
pub(crate) fn open(config: &WasmConfig) -> Result<Arc<dyn Store>, String> {
    let limits = Limits::of(config);
    Ok(match &config.keyvalue {
        KeyValueStore::Memory => Arc::new(memory::Memory::new(limits)),
        KeyValueStore::Folder(dir) => Arc::new(disk::Disk::open(dir, limits)?),
        KeyValueStore::Redis(url) => Arc::new(redis::Redis::new(url, limits)?),
    })
}

/// The entries of one service as the memory and disk stores see them: the
/// primitive reads and writes every operation is made of, so that both
/// stores keep the same semantics and bounds ([`apply`]).
pub(crate) trait Space {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Keys of `bucket` from offset `from`, at most `n`, in order.
    fn keys(&mut self, bucket: &str, from: u64, n: usize) -> Result<Vec<String>, Error>;
    /// How many keys `bucket` holds.
    fn count(&mut self, bucket: &str) -> Result<u64, Error>;
    /// Bytes the service holds.
    fn bytes(&mut self) -> Result<u64, Error>;
    /// Writes (`Some`) or removes (`None`) an entry; `count` and `bytes` are
    /// the bucket's key count and the service's bytes after it.
    fn put(
        &mut self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        count: u64,
        bytes: u64,
    ) -> Result<(), Error>;
}

/// Runs `op` on `bucket` of `space`, within `limits`; a refused write changes nothing.
pub(crate) fn apply(space: &mut dyn Space, limits: &Limits, bucket: &str, op: Op) -> Reply {
    match op {
        Op::Get(key) => Ok(Answer::Value(space.get(bucket, &key)?)),
        Op::Exists(key) => Ok(Answer::Bool(space.get(bucket, &key)?.is_some())),
        Op::ListKeys(from) => {
            let mut keys = space.keys(bucket, from, PAGE + 1)?;
            let more = keys.len() > PAGE;
            keys.truncate(PAGE);
            let next = more.then(|| from + PAGE as u64);
            Ok(Answer::Keys(keys, next))
        }
        Op::Set(key, value) => {
            write(space, limits, bucket, &key, Some(value))?;
            Ok(Answer::Done)
        }
        Op::Delete(key) => {
            write(space, limits, bucket, &key, None)?;
            Ok(Answer::Done)
        }
        Op::Increment(key, delta) => {
            let now = match space.get(bucket, &key)? {
                None => 0,
                Some(bytes) => number(&bytes)?,
            };
            let next = now
                .checked_add(delta)
                .ok_or_else(|| Error("the increment overflows a 64-bit number".into()))?;
            write(
                space,
                limits,
                bucket,
                &key,
                Some(next.to_string().into_bytes()),
            )?;
            Ok(Answer::Number(next))
        }
        Op::Swap(key, old, new) => {
            if space.get(bucket, &key)? != old {
                return Ok(Answer::Bool(false));
            }
            write(space, limits, bucket, &key, Some(new))?;
            Ok(Answer::Bool(true))
        }
        Op::GetMany(keys) => {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = space.get(bucket, &key)?;
                values.push(value.map(|value| (key, value)));
            }
            Ok(Answer::Values(values))
        }
        Op::SetMany(entries) => {
            for (key, value) in entries {
                write(space, limits, bucket, &key, Some(value))?;
            }
            Ok(Answer::Done)
        }
        Op::DeleteMany(keys) => {
            for key in keys {
                write(space, limits, bucket, &key, None)?;
            }
            Ok(Answer::Done)
        }
    }
}

/// Writes or removes one entry, keeping the key count and byte bounds.
fn write(
    space: &mut dyn Space,
    limits: &Limits,
    bucket: &str,
    key: &str,
    value: Option<Vec<u8>>,
) -> Result<(), Error> {
    let old = space.get(bucket, key)?;
    let old_cost = old.as_ref().map_or(0, |v| cost(bucket, key, v.len()));
    let new_cost = value.as_ref().map_or(0, |v| cost(bucket, key, v.len()));
    let mut count = space.count(bucket)?;
    match (&old, &value) {
        (None, Some(_)) if count >= limits.keys => {
            return Err(Error(format!(
                "the bucket holds {count} keys, the store's limit"
            )));
        }
        (None, Some(_)) => count += 1,
        (Some(_), None) => count -= 1,
        (None, None) => return Ok(()),
        (Some(_), Some(_)) => {}
    }
    let bytes = space.bytes()? - old_cost;
    if bytes + new_cost > limits.service_bytes {
        return Err(Error(format!(
            "the service's buckets would hold {} bytes, over the store's limit of {}",
            bytes + new_cost,
            limits.service_bytes
        )));
    }
    space.put(bucket, key, value, count, bytes + new_cost)
}

/// The decimal number a value holds, as `increment` reads it.
fn number(bytes: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| Error("the value is not a decimal number".into()))
}

/// A service's buckets in memory: what [`memory`] keeps, and what a
/// transaction of [`disk`] is tested against.
#[derive(Default)]
pub(crate) struct Buckets {
    bytes: u64,
    buckets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Space for Buckets {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.buckets.get(bucket).and_then(|b| b.get(key)).cloned())
    }

    fn keys(&mut self, bucket: &str, from: u64, n: usize) -> Result<Vec<String>, Error> {
        let Some(entries) = self.buckets.get(bucket) else {
            return Ok(Vec::new());
        };
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(entries.keys().skip(from).take(n).cloned().collect())
    }

    fn count(&mut self, bucket: &str) -> Result<u64, Error> {
        Ok(self.buckets.get(bucket).map_or(0, |b| b.len() as u64))
    }

    fn bytes(&mut self) -> Result<u64, Error> {
        Ok(self.bytes)
    }

    fn put(
        &mut self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        _count: u64,
        bytes: u64,
    ) -> Result<(), Error> {
        self.bytes = bytes;
        match value {
            Some(value) => {
                self.buckets
                    .entry(bucket.to_string())
                    .or_default()
                    .insert(key.to_string(), value);
            }
            None => {
                if let Some(entries) = self.buckets.get_mut(bucket) {
                    entries.remove(key);
                    if entries.is_empty() {
                        self.buckets.remove(bucket);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            key_bytes: 16,
            value_bytes: 64,
            keys: 3,
            service_bytes: 1000,
        }
    }

    #[test]
    fn bounds_refuse_and_change_nothing() {
        let mut space = Buckets::default();
        let limits = limits();
        for key in ["a", "b", "c"] {
            apply(&mut space, &limits, "b", Op::Set(key.into(), vec![1])).unwrap();
        }
        assert!(apply(&mut space, &limits, "b", Op::Set("d".into(), vec![1])).is_err());
        // Overwriting an existing key is no new key.
        apply(&mut space, &limits, "b", Op::Set("a".into(), vec![2; 10])).unwrap();
        assert_eq!(space.count("b").unwrap(), 3);
        let big = vec![0; 900];
        let refused = apply(&mut space, &limits, "b", Op::Set("a".into(), big));
        assert!(refused.is_err());
        assert_eq!(space.get("b", "a").unwrap(), Some(vec![2; 10]));
        apply(&mut space, &limits, "b", Op::Delete("a".into())).unwrap();
        assert_eq!(space.count("b").unwrap(), 2);
        assert_eq!(space.bytes, 2 * cost("b", "b", 1));
    }

    #[test]
    fn increments() {
        let mut space = Buckets::default();
        let limits = limits();
        let inc = |space: &mut Buckets, delta| {
            apply(space, &limits, "x", Op::Increment("n".into(), delta))
        };
        assert_eq!(inc(&mut space, 5).unwrap(), Answer::Number(5));
        assert_eq!(inc(&mut space, -2).unwrap(), Answer::Number(3));
        apply(
            &mut space,
            &limits,
            "x",
            Op::Set("t".into(), b"text".to_vec()),
        )
        .unwrap();
        assert!(apply(&mut space, &limits, "x", Op::Increment("t".into(), 1)).is_err());
        let swap = |space: &mut Buckets, old: Option<&[u8]>| {
            let op = Op::Swap("n".into(), old.map(<[u8]>::to_vec), b"9".to_vec());
            apply(space, &limits, "x", op)
        };
        assert_eq!(swap(&mut space, Some(b"4")).unwrap(), Answer::Bool(false));
        assert_eq!(swap(&mut space, None).unwrap(), Answer::Bool(false));
        assert_eq!(swap(&mut space, Some(b"3")).unwrap(), Answer::Bool(true));
        assert_eq!(space.get("x", "n").unwrap(), Some(b"9".to_vec()));
    }
}

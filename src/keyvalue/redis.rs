//! The Redis store: several runtimes, on several machines, serve one
//! service on one state.
//!
//! A bucket is one Redis hash, `wasmpool:kv:{len}:{service}:{bucket}`, its
//! fields the keys. Writes that must keep the key bound, and increments and
//! compare-and-swaps, are Lua scripts (one atomic step on the server, whichever host
//! sends them). The `redis` crate's blocking connections, one per thread of
//! a small pool fed by a bounded queue: a guest waits parked, connects and
//! commands are bounded in time, and a server that is down gives the guest
//! the interface's error (each thread connects again on its next operation).

use super::{Answer, Bucket, Error, Limits, Op, Pending, Reply, Store};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;
use std::time::Duration;

/// Connections (and threads) per runtime.
const CONNECTIONS: usize = 8;
/// The most operations waiting for a connection; past it one is refused.
const QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Fields one `HSCAN` step asks for.
const SCAN_COUNT: usize = 1000;

const SET: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.error_reply('the bucket holds ' .. ARGV[3] .. ' keys, the store\'s limit')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1"#;

const INCREMENT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.error_reply('the bucket holds ' .. ARGV[3] .. ' keys, the store\'s limit')
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])"#;

/// ARGV: key, whether an old value is expected, the old value, the new value, the key bound.
const SWAP: &str = r#"
local now = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if now ~= ARGV[3] then return 0 end
else
  if now then return 0 end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
    return redis.error_reply('the bucket holds ' .. ARGV[5] .. ' keys, the store\'s limit')
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1"#;

pub(crate) struct Redis {
    queue: Sender<Call>,
}

struct Call {
    bucket: Bucket,
    op: Op,
    reply: oneshot::Sender<Reply>,
}

struct Scripts {
    set: redis::Script,
    increment: redis::Script,
    swap: redis::Script,
}

impl Redis {
    pub(crate) fn new(url: &str, limits: Limits) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("invalid Redis address '{url}': {e}"))?;
        let (queue, calls) = crossbeam_channel::bounded(QUEUE);
        for n in 0..CONNECTIONS {
            let client = client.clone();
            let calls: Receiver<Call> = calls.clone();
            std::thread::Builder::new()
                .name(format!("wasmpool-redis-{n}"))
                .spawn(move || serve_calls(&client, &limits, &calls))
                .map_err(|e| format!("cannot start a Redis connection thread: {e}"))?;
        }
        Ok(Redis { queue })
    }
}

impl Store for Redis {
    fn submit(&self, bucket: &Bucket, op: Op) -> Pending {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            bucket: bucket.clone(),
            op,
            reply,
        };
        match self.queue.try_send(call) {
            Ok(()) => Pending::Later(answer),
            Err(TrySendError::Full(_)) => Pending::Ready(Err(Error(format!(
                "the key-value store is busy: {QUEUE} operations are waiting"
            )))),
            Err(TrySendError::Disconnected(_)) => {
                Pending::Ready(Err(Error("the store is closed".into())))
            }
        }
    }
}

/// One connection's thread: operations in order, until the store is dropped.
fn serve_calls(client: &redis::Client, limits: &Limits, calls: &Receiver<Call>) {
    let scripts = Scripts {
        set: redis::Script::new(SET),
        increment: redis::Script::new(INCREMENT),
        swap: redis::Script::new(SWAP),
    };
    let mut connection: Option<redis::Connection> = None;
    while let Ok(call) = calls.recv() {
        let reply = match connect(client, &mut connection) {
            Err(error) => Err(error),
            Ok(con) => {
                let reply = run(con, &scripts, limits, &call.bucket, call.op);
                if let Err(error) = &reply {
                    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                        connection = None;
                    }
                }
                reply.map_err(redis_error)
            }
        };
        let _ = call.reply.send(reply);
    }
}

fn connect<'a>(
    client: &redis::Client,
    connection: &'a mut Option<redis::Connection>,
) -> Result<&'a mut redis::Connection, Error> {
    if connection.is_none() {
        let con = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(redis_error)?;
        con.set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| con.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(redis_error)?;
        *connection = Some(con);
    }
    Ok(connection.as_mut().expect("connected above"))
}

fn redis_error(error: redis::RedisError) -> Error {
    Error(format!("redis: {error}"))
}

/// The hash of `bucket`: length-prefixed, so no service name runs into a bucket name.
fn hash(bucket: &Bucket) -> Vec<u8> {
    let mut key = format!("wasmpool:kv:{}:{}:", bucket.service.len(), bucket.service).into_bytes();
    key.extend_from_slice(bucket.name.as_bytes());
    key
}

fn run(
    con: &mut redis::Connection,
    scripts: &Scripts,
    limits: &Limits,
    bucket: &Bucket,
    op: Op,
) -> Result<Answer, redis::RedisError> {
    let at = hash(bucket);
    let cmd = |name| {
        let mut cmd = redis::cmd(name);
        cmd.arg(&at);
        cmd
    };
    Ok(match op {
        Op::Get(key) => Answer::Value(cmd("HGET").arg(key).query(con)?),
        Op::Exists(key) => Answer::Bool(cmd("HEXISTS").arg(key).query(con)?),
        Op::Delete(key) => {
            cmd("HDEL").arg(key).exec(con)?;
            Answer::Done
        }
        Op::DeleteMany(keys) => {
            if !keys.is_empty() {
                cmd("HDEL").arg(keys).exec(con)?;
            }
            Answer::Done
        }
        Op::Set(key, value) => {
            set(con, scripts, limits, &at, &key, &value)?;
            Answer::Done
        }
        Op::SetMany(entries) => {
            for (key, value) in entries {
                set(con, scripts, limits, &at, &key, &value)?;
            }
            Answer::Done
        }
        Op::GetMany(keys) => {
            if keys.is_empty() {
                return Ok(Answer::Values(Vec::new()));
            }
            let values: Vec<Option<Vec<u8>>> = cmd("HMGET").arg(&keys).query(con)?;
            Answer::Values(
                keys.into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|value| (key, value)))
                    .collect(),
            )
        }
        Op::ListKeys(cursor) => {
            let (next, fields): (u64, Vec<Vec<u8>>) = cmd("HSCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(con)?;
            // HSCAN answers field, value, field, value…
            let keys = fields
                .into_iter()
                .step_by(2)
                .map(|key| String::from_utf8_lossy(&key).into_owned())
                .collect();
            Answer::Keys(keys, (next != 0).then_some(next))
        }
        Op::Increment(key, delta) => Answer::Number(
            scripts
                .increment
                .key(&at)
                .arg(key)
                .arg(delta)
                .arg(limits.keys)
                .invoke(con)?,
        ),
        Op::Swap(key, old, new) => {
            let swapped: i64 = scripts
                .swap
                .key(&at)
                .arg(key)
                .arg(if old.is_some() { "1" } else { "0" })
                .arg(old.unwrap_or_default())
                .arg(new)
                .arg(limits.keys)
                .invoke(con)?;
            Answer::Bool(swapped == 1)
        }
    })
}

fn set(
    con: &mut redis::Connection,
    scripts: &Scripts,
    limits: &Limits,
    at: &[u8],
    key: &str,
    value: &[u8],
) -> Result<(), redis::RedisError> {
    scripts
        .set
        .key(at)
        .arg(key)
        .arg(value)
        .arg(limits.keys)
        .invoke::<i64>(con)
        .map(drop)
}

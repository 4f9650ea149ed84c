//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch: wasmtime's and
//! wasmCloud's version) on the runtime's store ([`crate::keyvalue`]).
//!
//! Linked by hand rather than through `wasmtime-wasi-keyvalue`, whose
//! in-memory buckets are copied at every `open` (no two instances share a
//! write) and whose bindings are private: keys and values are taken as
//! views of guest memory (`WasmStr`, `WasmList`) and measured against the
//! bounds before anything is copied; each call waits for its store parked.

use super::host::HostState;
use crate::keyvalue::{self, Answer, Bucket, Limits, Op, Store};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::component::{
    ComponentType, LinkerInstance, Lower, Resource, ResourceType, WasmList, WasmStr,
};
use wasmtime::StoreContextMut;

/// The buckets one guest may open: its service's.
#[derive(Clone)]
pub(crate) struct KeyValue {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) service: Arc<str>,
    pub(crate) limits: Limits,
    /// Operations made, by [`OP_NAMES`] index.
    pub(crate) counts: Arc<OpCounts>,
}

/// The `op` label values of `wasmpool_keyvalue_operations_total`, in count order.
pub(crate) const OP_NAMES: [&str; 10] = [
    "get",
    "set",
    "delete",
    "exists",
    "list_keys",
    "increment",
    "swap",
    "get_many",
    "set_many",
    "delete_many",
];

/// Operations one container made, by kind.
#[derive(Default)]
pub(crate) struct OpCounts(pub(crate) [AtomicU64; 10]);

impl OpCounts {
    fn count(&self, op: &Op) {
        if let Some(index) = OP_NAMES.iter().position(|name| *name == op.name()) {
            self.0[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An open bucket, as the guest's resource table holds it.
pub(crate) struct BucketHandle(Arc<str>);

/// The interface's `error`. Every runtime has a store and a guest opens only
/// its own service's buckets, so `no-such-store` and `access-denied` are
/// never answered; they stay for the WIT layout.
#[allow(dead_code)]
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum WitError {
    #[component(name = "no-such-store")]
    NoSuchStore,
    #[component(name = "access-denied")]
    AccessDenied,
    #[component(name = "other")]
    Other(String),
}

impl From<keyvalue::Error> for WitError {
    fn from(error: keyvalue::Error) -> Self {
        WitError::Other(error.0)
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
struct KeyResponse {
    keys: Vec<String>,
    cursor: Option<u64>,
}

type Cx<'a> = StoreContextMut<'a, HostState>;
/// A key and its value, or none.
type Entry = Option<(String, Vec<u8>)>;
type Outcome<T> = wasmtime::Result<(Result<T, WitError>,)>;
type Call<'a, T> = Box<dyn Future<Output = Outcome<T>> + Send + 'a>;

fn unexpected() -> WitError {
    WitError::Other("the store answered another operation".into())
}

/// A guest string as a key (or bucket name), refused past the bound before it is copied.
fn key(cx: &Cx<'_>, limits: &Limits, text: &WasmStr) -> wasmtime::Result<Result<String, WitError>> {
    let text = text.to_str(cx)?;
    Ok(limits
        .key(&text)
        .map(|()| text.into_owned())
        .map_err(Into::into))
}

/// A guest list of bytes as a value, refused past the bound before it is copied.
fn value(cx: &Cx<'_>, limits: &Limits, bytes: &WasmList<u8>) -> Result<Vec<u8>, WitError> {
    limits.value(bytes.len())?;
    Ok(bytes.as_le_slice(cx).to_vec())
}

/// Runs `op` on the bucket `handle` names; a bad handle traps.
async fn run(
    cx: &mut Cx<'_>,
    handle: &Resource<BucketHandle>,
    op: Op,
) -> wasmtime::Result<Result<Answer, WitError>> {
    let state = cx.data_mut();
    let name = state.table().get(handle)?.0.clone();
    let kv = state.keyvalue();
    kv.counts.count(&op);
    let bucket = Bucket {
        service: kv.service.clone(),
        name,
    };
    let pending = kv.store.submit(&bucket, op);
    Ok(pending.answer().await.map_err(Into::into))
}

/// Reads the guest's keys, each within the bound; at most `limits.keys` of them.
fn keys(
    cx: &mut Cx<'_>,
    limits: &Limits,
    list: &WasmList<WasmStr>,
) -> wasmtime::Result<Result<Vec<String>, WitError>> {
    if list.len() as u64 > limits.keys {
        return Ok(Err(WitError::Other(format!(
            "{} keys in one call, over the bucket's limit of {}",
            list.len(),
            limits.keys
        ))));
    }
    let mut keys = Vec::with_capacity(list.len());
    for index in 0..list.len() {
        let Some(text) = list.get(&mut *cx, index) else {
            break;
        };
        match key(cx, limits, &text?)? {
            Ok(text) => keys.push(text),
            Err(error) => return Ok(Err(error)),
        }
    }
    Ok(Ok(keys))
}

fn limits_of(cx: &mut Cx<'_>) -> Limits {
    cx.data_mut().keyvalue().limits
}

macro_rules! try_guest {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(error) => return Ok((Err(error),)),
        }
    };
}

/// Adds `wasi:keyvalue/{store,atomics,batch}` in both versions to `linker`:
/// `0.2.0-draft` (wasmtime's, wasmCloud's) and `0.2.0-draft2` (Spin 3's,
/// with compare-and-swap), on the same buckets.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    let mut store = linker.instance("wasi:keyvalue/store@0.2.0-draft")?;
    add_store(&mut store)?;
    store.func_wrap_async(
        "[method]bucket.list-keys",
        |mut cx: Cx<'_>,
         (bucket, cursor): (Resource<BucketHandle>, Option<u64>)|
         -> Call<'_, KeyResponse> {
            Box::new(async move {
                let op = Op::ListKeys(cursor.unwrap_or(0));
                Ok((run(&mut cx, &bucket, op)
                    .await?
                    .and_then(|answer| match answer {
                        Answer::Keys(keys, cursor) => Ok(KeyResponse { keys, cursor }),
                        _ => Err(unexpected()),
                    }),))
            })
        },
    )?;

    let mut atomics = linker.instance("wasi:keyvalue/atomics@0.2.0-draft")?;
    atomics.func_wrap_async(
        "increment",
        |mut cx: Cx<'_>,
         (bucket, name, delta): (Resource<BucketHandle>, WasmStr, u64)|
         -> Call<'_, u64> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                let delta = try_guest!(i64::try_from(delta)
                    .map_err(|_| WitError::Other("the delta is over 2^63 - 1".into())));
                Ok((run(&mut cx, &bucket, Op::Increment(name, delta))
                    .await?
                    .and_then(|answer| match answer {
                        Answer::Number(n) => u64::try_from(n)
                            .map_err(|_| WitError::Other("the value is negative".into())),
                        _ => Err(unexpected()),
                    }),))
            })
        },
    )?;

    let mut batch = linker.instance("wasi:keyvalue/batch@0.2.0-draft")?;
    batch.func_wrap_async(
        "get-many",
        |mut cx: Cx<'_>,
         (bucket, names): (Resource<BucketHandle>, WasmList<WasmStr>)|
         -> Call<'_, Vec<Entry>> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let names = try_guest!(keys(&mut cx, &limits, &names)?);
                Ok((run(&mut cx, &bucket, Op::GetMany(names)).await?.and_then(
                    |answer| match answer {
                        Answer::Values(values) => Ok(values),
                        _ => Err(unexpected()),
                    },
                ),))
            })
        },
    )?;
    add_batch_writes(&mut batch)?;
    add_draft2(linker)
}

/// What both versions' `store` share: the bucket, `open`, `get`, `set`, `delete`, `exists`.
fn add_store(store: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    store.resource(
        "bucket",
        ResourceType::host::<BucketHandle>(),
        |mut cx, rep| {
            cx.data_mut()
                .table()
                .delete(Resource::<BucketHandle>::new_own(rep))?;
            Ok(())
        },
    )?;
    store.func_wrap_async(
        "open",
        |mut cx: Cx<'_>, (name,): (WasmStr,)| -> Call<'_, Resource<BucketHandle>> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                let handle = cx.data_mut().table().push(BucketHandle(name.into()))?;
                Ok((Ok(handle),))
            })
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.get",
        |mut cx: Cx<'_>,
         (bucket, name): (Resource<BucketHandle>, WasmStr)|
         -> Call<'_, Option<Vec<u8>>> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                Ok((run(&mut cx, &bucket, Op::Get(name))
                    .await?
                    .and_then(|answer| match answer {
                        Answer::Value(value) => Ok(value),
                        _ => Err(unexpected()),
                    }),))
            })
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.set",
        |mut cx: Cx<'_>,
         (bucket, name, bytes): (Resource<BucketHandle>, WasmStr, WasmList<u8>)|
         -> Call<'_, ()> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                let bytes = try_guest!(value(&cx, &limits, &bytes));
                Ok((run(&mut cx, &bucket, Op::Set(name, bytes)).await?.map(drop),))
            })
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.delete",
        |mut cx: Cx<'_>, (bucket, name): (Resource<BucketHandle>, WasmStr)| -> Call<'_, ()> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                Ok((run(&mut cx, &bucket, Op::Delete(name)).await?.map(drop),))
            })
        },
    )?;
    store.func_wrap_async(
        "[method]bucket.exists",
        |mut cx: Cx<'_>, (bucket, name): (Resource<BucketHandle>, WasmStr)| -> Call<'_, bool> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                Ok((run(&mut cx, &bucket, Op::Exists(name)).await?.and_then(
                    |answer| match answer {
                        Answer::Bool(found) => Ok(found),
                        _ => Err(unexpected()),
                    },
                ),))
            })
        },
    )?;
    Ok(())
}

/// What both versions' `batch` share: `set-many`, `delete-many`.
fn add_batch_writes(batch: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    batch.func_wrap_async(
        "set-many",
        |mut cx: Cx<'_>,
         (bucket, entries): (Resource<BucketHandle>, WasmList<(WasmStr, WasmList<u8>)>)|
         -> Call<'_, ()> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                if entries.len() as u64 > limits.keys {
                    return Ok((Err(WitError::Other(format!(
                        "{} entries in one call, over the bucket's limit of {}",
                        entries.len(),
                        limits.keys
                    ))),));
                }
                let mut pairs = Vec::with_capacity(entries.len());
                for index in 0..entries.len() {
                    let Some(entry) = entries.get(&mut cx, index) else {
                        break;
                    };
                    let (name, bytes) = entry?;
                    let name = try_guest!(key(&cx, &limits, &name)?);
                    let bytes = try_guest!(value(&cx, &limits, &bytes));
                    pairs.push((name, bytes));
                }
                Ok((run(&mut cx, &bucket, Op::SetMany(pairs)).await?.map(drop),))
            })
        },
    )?;
    batch.func_wrap_async(
        "delete-many",
        |mut cx: Cx<'_>,
         (bucket, names): (Resource<BucketHandle>, WasmList<WasmStr>)|
         -> Call<'_, ()> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let names = try_guest!(keys(&mut cx, &limits, &names)?);
                Ok((run(&mut cx, &bucket, Op::DeleteMany(names))
                    .await?
                    .map(drop),))
            })
        },
    )?;
    Ok(())
}

/// Spin's `key-response`: its cursor is a string.
#[derive(ComponentType, Lower)]
#[component(record)]
struct KeyResponse2 {
    keys: Vec<String>,
    cursor: Option<String>,
}

/// A compare-and-swap in progress (Spin's `cas`): the key, and its value when the cas was made.
pub(crate) struct CasHandle {
    bucket: Arc<str>,
    key: String,
    current: Option<Vec<u8>>,
}

type SwapCall<'a> = Box<dyn Future<Output = wasmtime::Result<(Result<(), CasError>,)>> + Send + 'a>;

/// Spin's `cas-error`.
#[derive(ComponentType, Lower)]
#[component(variant)]
enum CasError {
    #[component(name = "store-error")]
    StoreError(WitError),
    /// The value changed: a fresh cas, with the value as it is now, to try again with.
    #[component(name = "cas-failed")]
    CasFailed(Resource<CasHandle>),
}

/// Reads `key` of the bucket named `bucket` into a new cas handle.
async fn new_cas(
    cx: &mut Cx<'_>,
    bucket: Arc<str>,
    key: String,
) -> wasmtime::Result<Result<Resource<CasHandle>, WitError>> {
    let handle = cx.data_mut().table().push(BucketHandle(bucket.clone()))?;
    let answer = run(cx, &handle, Op::Get(key.clone())).await;
    cx.data_mut().table().delete(handle)?;
    let current = match answer? {
        Ok(Answer::Value(value)) => value,
        Ok(_) => return Ok(Err(unexpected())),
        Err(error) => return Ok(Err(error)),
    };
    let cas = CasHandle {
        bucket,
        key,
        current,
    };
    Ok(Ok(cx.data_mut().table().push(cas)?))
}

/// `wasi:keyvalue@0.2.0-draft2`: the shared store and batch writes, its own
/// `list-keys`, `get-many`, `increment` (signed) and compare-and-swap.
fn add_draft2(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    let mut store = linker.instance("wasi:keyvalue/store@0.2.0-draft2")?;
    add_store(&mut store)?;
    store.func_wrap_async(
        "[method]bucket.list-keys",
        |mut cx: Cx<'_>,
         (bucket, cursor): (Resource<BucketHandle>, Option<String>)|
         -> Call<'_, KeyResponse2> {
            Box::new(async move {
                let from = match cursor.as_deref().map(str::parse::<u64>) {
                    None => 0,
                    Some(Ok(from)) => from,
                    Some(Err(_)) => {
                        return Ok((Err(WitError::Other("not a cursor of this store".into())),))
                    }
                };
                Ok((run(&mut cx, &bucket, Op::ListKeys(from)).await?.and_then(
                    |answer| match answer {
                        Answer::Keys(keys, cursor) => Ok(KeyResponse2 {
                            keys,
                            cursor: cursor.map(|c| c.to_string()),
                        }),
                        _ => Err(unexpected()),
                    },
                ),))
            })
        },
    )?;

    let mut atomics = linker.instance("wasi:keyvalue/atomics@0.2.0-draft2")?;
    atomics.resource("cas", ResourceType::host::<CasHandle>(), |mut cx, rep| {
        cx.data_mut()
            .table()
            .delete(Resource::<CasHandle>::new_own(rep))?;
        Ok(())
    })?;
    atomics.func_wrap_async(
        "increment",
        |mut cx: Cx<'_>,
         (bucket, name, delta): (Resource<BucketHandle>, WasmStr, i64)|
         -> Call<'_, i64> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                Ok((run(&mut cx, &bucket, Op::Increment(name, delta))
                    .await?
                    .and_then(|answer| match answer {
                        Answer::Number(n) => Ok(n),
                        _ => Err(unexpected()),
                    }),))
            })
        },
    )?;
    atomics.func_wrap_async(
        "[static]cas.new",
        |mut cx: Cx<'_>,
         (bucket, name): (Resource<BucketHandle>, WasmStr)|
         -> Call<'_, Resource<CasHandle>> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let name = try_guest!(key(&cx, &limits, &name)?);
                let bucket = cx.data_mut().table().get(&bucket)?.0.clone();
                Ok((new_cas(&mut cx, bucket, name).await?,))
            })
        },
    )?;
    atomics.func_wrap(
        "[method]cas.current",
        |mut cx: Cx<'_>,
         (cas,): (Resource<CasHandle>,)|
         -> wasmtime::Result<(Result<Option<Vec<u8>>, WitError>,)> {
            Ok((Ok(cx.data_mut().table().get(&cas)?.current.clone()),))
        },
    )?;
    atomics.func_wrap_async(
        "swap",
        |mut cx: Cx<'_>, (cas, bytes): (Resource<CasHandle>, WasmList<u8>)| -> SwapCall<'_> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let cas = cx.data_mut().table().delete(cas)?;
                let bytes = match value(&cx, &limits, &bytes) {
                    Ok(bytes) => bytes,
                    Err(error) => return Ok((Err(CasError::StoreError(error)),)),
                };
                let handle = cx
                    .data_mut()
                    .table()
                    .push(BucketHandle(cas.bucket.clone()))?;
                let op = Op::Swap(cas.key.clone(), cas.current, bytes);
                let answer = run(&mut cx, &handle, op).await;
                cx.data_mut().table().delete(handle)?;
                match answer? {
                    Ok(Answer::Bool(true)) => Ok((Ok(()),)),
                    Ok(Answer::Bool(false)) => match new_cas(&mut cx, cas.bucket, cas.key).await? {
                        Ok(fresh) => Ok((Err(CasError::CasFailed(fresh)),)),
                        Err(error) => Ok((Err(CasError::StoreError(error)),)),
                    },
                    Ok(_) => Ok((Err(CasError::StoreError(unexpected())),)),
                    Err(error) => Ok((Err(CasError::StoreError(error)),)),
                }
            })
        },
    )?;

    let mut batch = linker.instance("wasi:keyvalue/batch@0.2.0-draft2")?;
    batch.func_wrap_async(
        "get-many",
        |mut cx: Cx<'_>,
         (bucket, names): (Resource<BucketHandle>, WasmList<WasmStr>)|
         -> Call<'_, Vec<(String, Option<Vec<u8>>)>> {
            Box::new(async move {
                let limits = limits_of(&mut cx);
                let names = try_guest!(keys(&mut cx, &limits, &names)?);
                let asked = names.clone();
                Ok((run(&mut cx, &bucket, Op::GetMany(names)).await?.and_then(
                    |answer| match answer {
                        Answer::Values(values) => Ok(asked
                            .into_iter()
                            .zip(values)
                            .map(|(key, found)| (key, found.map(|(_, value)| value)))
                            .collect()),
                        _ => Err(unexpected()),
                    },
                ),))
            })
        },
    )?;
    add_batch_writes(&mut batch)
}

//! The in-memory store: each service's buckets behind a lock of their own.

use super::{apply, Bucket, Buckets, Limits, Op, Pending, Store};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct Memory {
    limits: Limits,
    services: Mutex<HashMap<Arc<str>, Arc<Mutex<Buckets>>>>,
}

impl Memory {
    pub(crate) fn new(limits: Limits) -> Self {
        Memory {
            limits,
            services: Mutex::default(),
        }
    }
}

impl Store for Memory {
    fn submit(&self, bucket: &Bucket, op: Op) -> Pending {
        let space = self
            .services
            .lock()
            .entry(bucket.service.clone())
            .or_default()
            .clone();
        let mut space = space.lock();
        Pending::Ready(apply(&mut *space, &self.limits, &bucket.name, op))
    }
}

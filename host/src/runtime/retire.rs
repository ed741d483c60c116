//! Where a request's last adapter instance is dropped: on its worker thread, after the
//! response is written, when that worker next runs out of work.
//!
//! Dropping an instance resets its pooled memory, a noticeable share of a request's CPU.
//! Done in place, it sits between parsing the upstream's answer and writing the response.
//! A task spawned per instance moves it after the write, but when load is light it often
//! wakes an idle worker just to run it (bench/README.md has the measurements). So each worker
//! keeps the instances its requests let go of and drops them when it is about to park
//! (tokio's `on_thread_park`), or in one spawned task per [`BATCH`] while it never parks.
//! Threads without that hook (a test's runtime, blocking threads) spawn a task per instance.

use std::cell::{Cell, RefCell};

use super::AdapterInstance;

/// Instances a worker keeps before it spawns a task to drop them: bounds the slots (and the
/// memory) held by finished requests on a worker that stays busy.
const BATCH: usize = 4;

thread_local! {
    static RETIRED: RefCell<Vec<AdapterInstance>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread runs [`drop_retired`] before it parks.
    static DRAINED_ON_PARK: Cell<bool> = const { Cell::new(false) };
}

/// Gives back an instance its request is done with; dropped later on this thread (see the
/// module documentation). Must be called within a tokio runtime.
pub(crate) fn retire(instance: AdapterInstance) {
    if !DRAINED_ON_PARK.get() {
        tokio::spawn(async move { drop(instance) });
        return;
    }
    let full = RETIRED.with_borrow_mut(|retired| {
        retired.push(instance);
        (retired.len() >= BATCH).then(|| std::mem::take(retired))
    });
    if let Some(batch) = full {
        tokio::spawn(async move { drop(batch) });
    }
}

/// Drops the instances this thread's requests let go of. For tokio's `on_thread_park`:
/// see [`drop_on_park`].
fn drop_retired() {
    DRAINED_ON_PARK.set(true);
    // Taken out before dropping so no borrow is held while instances are torn down.
    let batch =
        RETIRED.with_borrow_mut(|retired| (!retired.is_empty()).then(|| std::mem::take(retired)));
    drop(batch);
}

/// Makes the runtime's workers drop retired instances just before they park.
pub fn drop_on_park(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_park(drop_retired)
}

/// Instances retired on this thread and not yet dropped.
#[cfg(test)]
pub(crate) fn pending() -> usize {
    RETIRED.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::library::AdapterSet;
    use crate::runtime::{Adapter, Runtime, RuntimeConfig};

    async fn ollama(runtime: &Runtime) -> std::sync::Arc<Adapter> {
        let adapters = AdapterSet::load(runtime, None, &AdapterSet::default()).await;
        adapters.get("ollama").unwrap().clone()
    }

    /// Runs `test` on a current-thread runtime whose thread drops retired instances on park.
    fn with_hook(test: impl AsyncFnOnce()) {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        drop_on_park(&mut builder)
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    }

    async fn park_once() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Instances are taken before the hook's first park, and released with no await in
    // between the assertions: an epoch tick during instantiation can make the test's future
    // yield, and a park in the middle would drop them early.

    #[test]
    fn a_worker_drops_retired_instances_when_it_parks() {
        with_hook(async || {
            let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
            let instance = ollama(&runtime).await.instance().await.unwrap();
            park_once().await;
            instance.release();
            assert_eq!(pending(), 1);
            assert_eq!(runtime.instances_in_use(), 1, "still held after release");
            park_once().await;
            assert_eq!(pending(), 0);
            assert_eq!(
                runtime.instances_in_use(),
                0,
                "dropped when the thread parked"
            );
        });
    }

    #[test]
    fn a_worker_that_does_not_park_drops_them_in_batches() {
        with_hook(async || {
            let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
            let adapter = ollama(&runtime).await;
            let mut instances = Vec::new();
            for _ in 0..BATCH {
                instances.push(adapter.instance().await.unwrap());
            }
            park_once().await;
            for (held, instance) in instances.into_iter().enumerate() {
                assert_eq!(pending(), held);
                instance.release();
            }
            assert_eq!(pending(), 0, "a full batch is handed to a task");
            assert_eq!(runtime.instances_in_use() as usize, BATCH);
            tokio::task::yield_now().await;
            assert_eq!(runtime.instances_in_use(), 0, "the task dropped the batch");
        });
    }

    #[tokio::test]
    async fn without_the_hook_each_instance_is_dropped_by_a_task() {
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let instance = ollama(&runtime).await.instance().await.unwrap();
        park_once().await;
        instance.release();
        assert_eq!(pending(), 0);
        assert_eq!(runtime.instances_in_use(), 1);
        tokio::task::yield_now().await;
        assert_eq!(runtime.instances_in_use(), 0);
    }
}

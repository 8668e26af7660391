//! Watch-backed caches of the objects every sweep reads, so a sweep costs no API request and
//! no work proportional to the cluster: one list when a watch starts (or restarts after a
//! 410 Gone), then only the changes.
//!
//! Objects are reduced to the few facts the autoscaler needs as they arrive, so memory holds
//! tens of bytes per pod instead of the whole object. A cache answers only once its first list
//! is complete; until then callers list directly. A watch error (a 410 Gone, a dropped or
//! refused connection) makes the cache unsynced at once, so no decision is taken from what it
//! held, and the watch starts over with a full list (after a backoff); a relist replaces the
//! whole map at once (objects deleted meanwhile disappear).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

#[derive(Debug)]
struct State<V> {
    items: HashMap<String, V>,
    synced: bool,
}

/// Reduced objects by key, kept current by a background watch.
#[derive(Debug)]
pub(super) struct Cache<V> {
    state: Arc<RwLock<State<V>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<V> Drop for Cache<V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a cache keys and reduces its objects; `None` leaves an object out.
pub(super) type Reduce<K, V> = fn(&K) -> Option<(String, V)>;

impl<V: Send + Sync + 'static> Cache<V> {
    /// Starts watching `api` (on the current tokio runtime).
    pub fn spawn<K>(api: Api<K>, config: watcher::Config, reduce: Reduce<K, V>, what: &'static str) -> Self
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let state = Arc::new(RwLock::new(State { items: HashMap::new(), synced: false }));
        let task = tokio::spawn(run(api, config, reduce, state.clone(), what));
        Cache { state, task }
    }

    /// Reads the cache with `f`, or `None` while its first list is incomplete.
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<String, V>) -> R) -> Option<R> {
        let state = self.state.read().ok()?;
        state.synced.then(|| f(&state.items))
    }
}

/// First and longest pause before a failed watch starts again with a fresh list.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

async fn run<K, V>(
    api: Api<K>,
    config: watcher::Config,
    reduce: Reduce<K, V>,
    state: Arc<RwLock<State<V>>>,
    what: &'static str,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    V: Send + Sync + 'static,
{
    let mut backoff = RESTART_BACKOFF.0;
    loop {
        // A fresh watcher starts with a full list: after a failure the cache answers again
        // only once that list is complete, never from a map a broken watch left behind.
        let mut events = std::pin::pin!(watcher::watcher(api.clone(), config.clone()));
        let mut buffer: Option<HashMap<String, V>> = None;
        while let Some(event) = events.next().await {
            // A poisoned lock means a reader panicked; the map itself is still whole.
            let mut guard = match state.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            match event {
                Ok(event) => {
                    if matches!(event, Event::InitDone) {
                        backoff = RESTART_BACKOFF.0;
                    }
                    apply(&mut guard, &mut buffer, event, reduce, what);
                }
                Err(error) => {
                    guard.synced = false;
                    tracing::warn!(what, %error, "watch failed: cache unsynced (callers read the API) until it has listed again");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF.1);
    }
}

fn apply<K, V>(
    state: &mut State<V>,
    buffer: &mut Option<HashMap<String, V>>,
    event: Event<K>,
    reduce: Reduce<K, V>,
    what: &'static str,
) where
    K: Resource,
{
    match event {
        Event::Init => *buffer = Some(HashMap::new()),
        Event::InitApply(object) => {
            if let (Some(buffer), Some((key, value))) = (buffer.as_mut(), reduce(&object)) {
                buffer.insert(key, value);
            }
        }
        Event::InitDone => {
            state.items = buffer.take().unwrap_or_default();
            state.synced = true;
            tracing::debug!(what, objects = state.items.len(), "cache listed");
        }
        Event::Apply(object) => match reduce(&object) {
            Some((key, value)) => {
                state.items.insert(key, value);
            }
            // It no longer qualifies (e.g. a label was removed): forget it.
            None => {
                if let Some(key) = key_of(&object) {
                    state.items.remove(&key);
                }
            }
        },
        Event::Delete(object) => {
            if let Some(key) = key_of(&object) {
                state.items.remove(&key);
            }
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects: the key every reducer uses.
pub(super) fn key_of<K: Resource>(object: &K) -> Option<String> {
    let meta = object.meta();
    let name = meta.name.as_ref()?;
    Some(match &meta.namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    fn node(name: &str, pool: Option<&str>) -> Node {
        let labels = pool.map(|p| [("pool".to_string(), p.to_string())].into());
        Node {
            metadata: ObjectMeta { name: Some(name.into()), labels, ..ObjectMeta::default() },
            ..Node::default()
        }
    }

    fn reduce(node: &Node) -> Option<(String, String)> {
        Some((key_of(node)?, node.metadata.labels.as_ref()?.get("pool")?.clone()))
    }

    #[test]
    fn a_relist_replaces_everything_and_changes_apply_in_between() {
        let mut state = State { items: HashMap::new(), synced: false };
        let mut buffer = None;
        let mut feed = |event| apply(&mut state, &mut buffer, event, reduce, "nodes");
        feed(Event::Init);
        feed(Event::InitApply(node("a", Some("w"))));
        feed(Event::InitApply(node("b", Some("w"))));
        feed(Event::InitApply(node("control", None)));
        feed(Event::InitDone);
        feed(Event::Apply(node("c", Some("w"))));
        feed(Event::Apply(node("b", None)));
        feed(Event::Delete(node("a", Some("w"))));
        // A 410 Gone: the watcher relists; "c" was deleted while nobody watched.
        feed(Event::Init);
        feed(Event::InitApply(node("d", Some("w"))));
        assert_eq!(state.items.keys().collect::<Vec<_>>(), vec!["c"], "the old map serves until InitDone");
        apply(&mut state, &mut buffer, Event::InitDone, reduce, "nodes");
        assert!(state.synced);
        assert_eq!(state.items.keys().collect::<Vec<_>>(), vec!["d"]);
    }
}

//! The run list, cached per filter. CI jobs and dashboards poll the list far
//! more often than runs change, and on a small machine the database round trip
//! is most of a list request's cost. An entry is served only while the
//! [`ChangeClock`] still shows the count it was filled at (no run or epoch row
//! committed since, as the live hub hears it) and for at most [`MAX_AGE`], so a
//! change that somehow went unheard is bounded too. While the hub is not
//! listening every request goes to the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::ReadError;
use super::runs::{RunFilter, RunPage, list_runs};
use crate::change_clock::ChangeClock;

/// The longest an entry is served even when no change was heard.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// Distinct filters remembered; past this the cache starts over (a crawler
/// walking every page must not grow it without bound). At the largest page
/// (500 runs) that is a few tens of megabytes at most.
const MAX_ENTRIES: usize = 64;

#[derive(Debug)]
struct Entry {
    count: u64,
    filled: Instant,
    page: Arc<RunPage>,
}

#[derive(Debug, Default)]
pub struct RunListCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl RunListCache {
    /// [`list_runs`], answered from memory when nothing changed since.
    pub async fn list(
        &self,
        pool: &PgPool,
        clock: &ChangeClock,
        filter: &RunFilter,
    ) -> Result<RunPage, ReadError> {
        // Read the count before the query: a change committed while it runs
        // moves the count past what the entry records, so the entry is never
        // served even if the query missed the change.
        let Some(count) = clock.now() else {
            return list_runs(pool, filter).await;
        };
        let key = format!("{filter:?}");
        if let Some(page) = self.fresh(&key, count) {
            let mut page = RunPage::clone(&page);
            page.refresh_durations();
            return Ok(page);
        }
        let page = list_runs(pool, filter).await?;
        self.store(key, count, Arc::new(page.clone()));
        Ok(page)
    }

    fn fresh(&self, key: &str, count: u64) -> Option<Arc<RunPage>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.count == count && e.filled.elapsed() < MAX_AGE)
            .map(|e| Arc::clone(&e.page))
    }

    fn store(&self, key: String, count: u64, page: Arc<RunPage>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                count,
                filled: Instant::now(),
                page,
            },
        );
    }
}

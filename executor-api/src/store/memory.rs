//! [`MemoryBuildStore`]: the store in a map (tests, the demo).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use executor_base::{ApiBuildStatus, BuildId, Error, ErrorKind};
use parking_lot::Mutex;

use super::BuildStore;
use crate::model::{BuildRecord, LogLine, MAX_LINES_PER_STEP, is_final};

#[derive(Debug, Default)]
struct Data {
    next: u64,
    builds: BTreeMap<u64, BuildRecord>,
    /// Stored lines per (build, step).
    lines: HashMap<(u64, String), Vec<LogLine>>,
    secrets: HashMap<String, String>,
}

/// A [`BuildStore`] in memory: everything is gone with the process.
#[derive(Debug)]
pub struct MemoryBuildStore {
    data: Mutex<Data>,
}

impl Default for MemoryBuildStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBuildStore {
    /// An empty store whose sequence starts at 1.
    pub fn new() -> Self {
        Self {
            data: Mutex::new(Data {
                next: 1,
                ..Data::default()
            }),
        }
    }
}

#[async_trait]
impl BuildStore for MemoryBuildStore {
    fn uri(&self) -> String {
        "memory:".into()
    }

    async fn next_id(&self) -> Result<BuildId, Error> {
        let mut d = self.data.lock();
        loop {
            let n = d.next;
            d.next += 1;
            if !d.builds.contains_key(&n) {
                return BuildId::new(n)
                    .ok_or_else(|| super::unavailable("the sequence is exhausted"));
            }
        }
    }

    async fn insert(&self, build: &BuildRecord) -> Result<(), Error> {
        let mut d = self.data.lock();
        let id = build.id.get();
        if d.builds.contains_key(&id) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("Build {id} already exists"),
            ));
        }
        d.next = d.next.max(id.saturating_add(1));
        let mut b = build.clone();
        for s in &mut b.steps {
            s.next_line = 0;
        }
        d.builds.insert(id, b);
        Ok(())
    }

    async fn get(&self, id: u64) -> Result<Option<BuildRecord>, Error> {
        Ok(self.data.lock().builds.get(&id).cloned())
    }

    async fn list(&self) -> Result<Vec<(BuildId, ApiBuildStatus)>, Error> {
        Ok(self
            .data
            .lock()
            .builds
            .values()
            .map(|b| (b.id, b.status))
            .collect())
    }

    async fn unsettled(&self) -> Result<Vec<BuildRecord>, Error> {
        Ok(self
            .data
            .lock()
            .builds
            .values()
            .filter(|b| !is_final(b.status) || !b.settled)
            .cloned()
            .collect())
    }

    async fn update(&self, build: &BuildRecord) -> Result<bool, Error> {
        let mut d = self.data.lock();
        let Some(cur) = d.builds.get_mut(&build.id.get()) else {
            return Ok(false);
        };
        if cur.version != build.version {
            return Ok(false);
        }
        let lines: Vec<(String, u64)> = cur
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.next_line))
            .collect();
        *cur = build.clone();
        cur.version = build.version + 1;
        for s in &mut cur.steps {
            s.next_line = lines
                .iter()
                .find(|(n, _)| *n == s.name)
                .map_or(0, |(_, l)| *l);
        }
        Ok(true)
    }

    async fn append_logs(
        &self,
        id: u64,
        step: &str,
        lines: &[LogLine],
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let mut d = self.data.lock();
        let Some(st) = d
            .builds
            .get_mut(&id)
            .and_then(|b| b.steps.iter_mut().find(|s| s.name == step))
        else {
            return Ok(None);
        };
        let mut accepted = Vec::new();
        for l in lines {
            if l.n < st.next_line {
                continue;
            }
            st.next_line = l.n + 1;
            accepted.push(l.clone());
        }
        let stored = d.lines.entry((id, step.to_string())).or_default();
        for l in &accepted {
            if stored.len() < MAX_LINES_PER_STEP {
                stored.push(l.clone());
            }
        }
        Ok(Some(accepted))
    }

    async fn logs(
        &self,
        id: u64,
        step: &str,
        from: u64,
        limit: usize,
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let d = self.data.lock();
        let exists = d
            .builds
            .get(&id)
            .is_some_and(|b| b.steps.iter().any(|s| s.name == step));
        if !exists {
            return Ok(None);
        }
        let lines = d
            .lines
            .get(&(id, step.to_string()))
            .map(|ls| {
                let start = ls.partition_point(|l| l.n < from);
                ls[start..].iter().take(limit).cloned().collect()
            })
            .unwrap_or_default();
        Ok(Some(lines))
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        Ok(self
            .data
            .lock()
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| candidate.to_string())
            .clone())
    }
}

//! The lease of a job's runner: the client that runs a job's tasks holds
//! `jobs/<job>/lease/<n>`, renewed while it runs and deleted when the job ends, so an `attach`
//! that would run unfinished tasks again refuses while another client runs them. A lease is
//! taken with a create-only write: of two clients taking generation `n + 1` of an expired
//! lease, one wins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::storage::Storage;

/// How long a lease holds without renewal.
const TTL: Duration = Duration::from_secs(30);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LeaseRecord {
    /// This holder's random id.
    holder: String,
    /// The holder's machine (its boot id where known), to tell whether `pid` can be checked.
    machine: String,
    /// The holder's process id.
    pid: u32,
    /// When the lease ends unless renewed, in milliseconds since the Unix epoch.
    expires_unix_ms: u64,
}

impl LeaseRecord {
    fn new(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.to_string(),
            machine: machine_id(),
            pid: std::process::id(),
            expires_unix_ms: unix_ms(SystemTime::now() + TTL),
        }
    }

    /// Whether the holder may still be running the job: the lease has not expired, and, when
    /// the holder ran on this machine, its process is alive.
    fn is_live(&self) -> bool {
        if unix_ms(SystemTime::now()) >= self.expires_unix_ms {
            return false;
        }
        if !self.machine.is_empty() && self.machine == machine_id() {
            return process_alive(self.pid);
        }
        true
    }
}

/// A lease this process holds; renewed in the background until [`Lease::release`] or drop.
#[derive(Debug)]
pub(crate) struct Lease {
    storage: Storage,
    key: Path,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the first lease of a job just submitted.
    pub(crate) async fn take_new(storage: &Storage, job: &str) -> Result<Lease> {
        Lease::take(storage, job, 0).await
    }

    /// Takes over the lease of an existing job, or refuses when another live client holds it.
    pub(crate) async fn take_over(storage: &Storage, job: &str) -> Result<Lease> {
        let mut newest: Option<(u64, Path)> = None;
        for key in storage.list(&storage.layout().leases(job)).await? {
            let generation = key.filename().and_then(|n| n.parse::<u64>().ok());
            if let Some(g) = generation
                && newest.as_ref().is_none_or(|(n, _)| g > *n)
            {
                newest = Some((g, key));
            }
        }
        let next = match newest {
            None => 0,
            Some((generation, key)) => {
                match storage.get(&key).await {
                    Ok(bytes) => {
                        // An unreadable lease counts as expired: it cannot say otherwise.
                        if let Ok(record) = serde_json::from_slice::<LeaseRecord>(&bytes)
                            && record.is_live()
                        {
                            return Err(busy(job, &record));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {} // released meanwhile
                    Err(e) => return Err(e),
                }
                generation.checked_add(1).ok_or_else(|| {
                    Error::new(ErrorKind::Codec, format!("job `{job}` has a corrupt lease"))
                })?
            }
        };
        Lease::take(storage, job, next).await
    }

    async fn take(storage: &Storage, job: &str, generation: u64) -> Result<Lease> {
        let key = storage.layout().lease(job, generation);
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let record = LeaseRecord::new(&holder);
        if !storage.put_if_absent(&key, to_json(&record)?).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("another client took over job `{job}` at the same moment"),
            )
            .with_operation("Job::attach"));
        }
        let (renew_storage, renew_key) = (storage.clone(), key.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let renewed = to_json(&LeaseRecord::new(&holder));
                let stored = match renewed {
                    Ok(bytes) => renew_storage.put(&renew_key, bytes).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = stored {
                    tracing::warn!(key = %renew_key, error = %e, "could not renew the job's lease");
                }
            }
        });
        Ok(Lease {
            storage: storage.clone(),
            key,
            renewal,
        })
    }

    /// Stops renewing and deletes the lease (the job has ended).
    pub(crate) async fn release(self) {
        self.renewal.abort();
        if let Err(e) = self.storage.delete(&self.key).await {
            tracing::debug!(key = %self.key, error = %e, "could not delete the job's lease; it expires");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

fn busy(job: &str, record: &LeaseRecord) -> Error {
    let until = UNIX_EPOCH + Duration::from_millis(record.expires_unix_ms);
    let left = until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    Error::new(
        ErrorKind::Conflict,
        format!(
            "job `{job}` is being run by another client (process {}), whose lease is renewed \
             every {}s: attach again once it has ended, or at most {left}s after it stopped",
            record.pid,
            RENEW_EVERY.as_secs()
        ),
    )
    .with_operation("Job::attach")
}

fn to_json(record: &LeaseRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::codec("job lease", e))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// This machine's boot id (Linux), or empty where unknown.
fn machine_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether process `pid` of this machine is alive (Linux: `/proc/<pid>` exists).
fn process_alive(pid: u32) -> bool {
    !std::path::Path::new("/proc/self").exists()
        || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_lease_refuses_and_a_dead_holders_lease_is_taken_over() {
        let storage = Storage::open("memory://lease-test").unwrap();
        let held = Lease::take_new(&storage, "j").await.unwrap();
        let err = Lease::take_over(&storage, "j").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(
            err.to_string().contains("being run by another client"),
            "{err}"
        );
        held.release().await;
        let second = Lease::take_over(&storage, "j").await.unwrap();
        assert!(
            second.key.as_ref().ends_with("lease/000000"),
            "{}",
            second.key
        );
        drop(second); // not released: a live lease of this process stays

        // A lease whose holder process is gone is taken over with the next generation.
        let dead = LeaseRecord {
            pid: u32::MAX,
            ..LeaseRecord::new("dead")
        };
        let key = storage.layout().lease("k", 4);
        storage.put(&key, to_json(&dead).unwrap()).await.unwrap();
        let taken = Lease::take_over(&storage, "k").await.unwrap();
        assert!(
            taken.key.as_ref().ends_with("lease/000005"),
            "{}",
            taken.key
        );
    }
}

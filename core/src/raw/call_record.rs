//! A single call's record in one object, `jobs/<job>/call`: a pack whose entry 0 is the
//! manifest (JSON, as `job.json` of a job), entry 1 the packed input (as `input`) and entry 2
//! the stored outcome. A `call` has no handle to attach with, so it stores nothing before its
//! value is returned, and then one object instead of three.

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::envelope::Outcome;
use crate::raw::manifest::JobManifest;
use crate::raw::pack::{PackWriter, read_pack};

const MANIFEST: u64 = 0;
const INPUT: u64 = 1;
const OUTCOME: u64 = 2;

/// A call's record, as read back.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The job's manifest.
    pub manifest: JobManifest,
    /// The packed input (one task).
    pub input: Bytes,
    /// The call's outcome.
    pub outcome: Outcome,
    /// Where the stored outcome is inside the record.
    pub outcome_range: std::ops::Range<u64>,
}

/// The bytes of a call's record.
pub fn pack_call_record(
    manifest: &JobManifest,
    input: &[u8],
    outcome: &Outcome,
) -> Result<Vec<u8>> {
    let mut pack = PackWriter::new();
    pack.push(MANIFEST, &manifest.to_json()?);
    pack.push(INPUT, input);
    pack.push(OUTCOME, &outcome.to_stored()?);
    Ok(pack.finish())
}

/// Reads a call's record.
pub fn read_call_record(bytes: &Bytes) -> Result<CallRecord> {
    let entries = read_pack(bytes)?;
    let entry = |key: u64| {
        entries.iter().find(|e| e.key == key).ok_or_else(|| {
            Error::new(
                ErrorKind::Codec,
                format!("corrupt call record: entry {key} is missing"),
            )
        })
    };
    let outcome = entry(OUTCOME)?;
    Ok(CallRecord {
        manifest: JobManifest::from_json(&entry(MANIFEST)?.bytes)?,
        input: entry(INPUT)?.bytes.clone(),
        outcome: Outcome::from_stored(&outcome.bytes)?,
        outcome_range: outcome.range.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::backend::JobSpec;
    use crate::types::options::TaskOptions;

    #[test]
    fn a_call_record_round_trips() {
        let spec = JobSpec {
            id: "j".into(),
            function: "f".into(),
            signature: 1,
            binary: "b".into(),
            task_count: 1,
            options: TaskOptions::default(),
        };
        let manifest = JobManifest::new(&spec, "local", "memory://x");
        let bytes = pack_call_record(&manifest, b"in", &Outcome::Ok(vec![7])).unwrap();
        let back = read_call_record(&Bytes::from(bytes.clone())).unwrap();
        assert_eq!(back.manifest, manifest);
        assert_eq!(&back.input[..], b"in");
        assert_eq!(back.outcome, Outcome::Ok(vec![7]));
        let at = back.outcome_range.start as usize..back.outcome_range.end as usize;
        assert_eq!(Outcome::from_stored(&bytes[at]).unwrap(), back.outcome);
        assert!(read_call_record(&Bytes::from_static(b"\x01RWPK")).is_err());
    }
}

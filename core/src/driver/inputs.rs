//! A job's packed inputs as the driver holds them: one buffer (the object stored at
//! `jobs/<job>/input`) and each task's byte range in it, a few bytes per task.

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::raw::executor::Attempt;
use crate::raw::pack::{PackWriter, read_pack};

/// Every task's encoded arguments, packed.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    bytes: Bytes,
    ranges: Vec<(u64, u64)>,
}

impl Inputs {
    /// Packs the arguments of tasks `0..args.len()`.
    pub(crate) fn pack(args: &[Vec<u8>]) -> Inputs {
        let mut pack = PackWriter::new();
        for (i, a) in args.iter().enumerate() {
            pack.push(i as u64, a);
        }
        let ranges = pack
            .ranges()
            .into_iter()
            .map(|r| (r.start, r.end))
            .collect();
        Inputs {
            bytes: Bytes::from(pack.finish()),
            ranges,
        }
    }

    /// Reads a stored input; it must hold tasks `0..task_count` in order.
    pub(crate) fn from_stored(job: &str, bytes: Bytes, task_count: u64) -> Result<Inputs> {
        let entries = read_pack(&bytes)?;
        if entries.len() as u64 != task_count {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "job `{job}` is corrupt: its job.json counts {task_count} tasks, its input \
                     holds {}",
                    entries.len()
                ),
            ));
        }
        let mut ranges = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            if e.key != i as u64 {
                return Err(Error::new(
                    ErrorKind::Codec,
                    format!(
                        "job `{job}` is corrupt: input entry {i} is for task {}",
                        e.key
                    ),
                ));
            }
            ranges.push((e.range.start, e.range.end));
        }
        Ok(Inputs { bytes, ranges })
    }

    /// The packed object, as stored.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many tasks.
    pub(crate) fn len(&self) -> u64 {
        self.ranges.len() as u64
    }

    /// Attempt `attempt` of task `task` (which must be below `len`).
    pub(crate) fn attempt(&self, task: u64, attempt: u32) -> Attempt {
        let (start, end) = self.ranges[task as usize];
        Attempt {
            task,
            attempt,
            args: self.bytes.slice(start as usize..end as usize),
            range: (start, end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_and_stored_inputs_agree() {
        let args = vec![b"a".to_vec(), b"bcd".to_vec(), Vec::new()];
        let packed = Inputs::pack(&args);
        let back = Inputs::from_stored("j", packed.bytes().clone(), 3).unwrap();
        for (i, a) in args.iter().enumerate() {
            assert_eq!(&back.attempt(i as u64, 1).args[..], &a[..]);
            assert_eq!(
                packed.attempt(i as u64, 2).range,
                back.attempt(i as u64, 1).range
            );
        }
        let e = Inputs::from_stored("j", packed.bytes().clone(), 4).unwrap_err();
        assert!(e.to_string().contains("counts 4 tasks"), "{e}");
    }
}

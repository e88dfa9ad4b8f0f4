//! Every stored format decodes corrupt, truncated and random bytes into a clear error: no
//! panic, no abort, no allocation larger than the input warrants. A seeded fuzz loop (runs on
//! stable, same inputs every run).

use bytes::Bytes;
use redwood_core::TaskOptions;
use redwood_core::codec;
use redwood_core::raw::backend::JobSpec;
use redwood_core::raw::envelope::{Outcome, TaskEnvelope};
use redwood_core::raw::events::{TaskRecord, parse_events};
use redwood_core::raw::manifest::JobManifest;
use redwood_core::raw::pack::{PackWriter, read_pack};
use redwood_core::{TaskError, TaskErrorKind};

/// Random inputs per format, on top of every truncation and many bit flips of a valid one.
const RANDOM: usize = 3000;

/// Feeds `decode` every prefix of `valid`, bit flips of it, and random bytes; it must return
/// (Ok or Err) every time.
fn fuzz(name: &str, valid: &[u8], decode: impl Fn(&[u8]) -> bool) {
    assert!(decode(valid), "{name}: the valid input does not decode");
    let mut rng = fastrand::Rng::with_seed(0x5EED ^ valid.len() as u64);
    let mut errors = 0usize;
    for cut in 0..valid.len() {
        errors += usize::from(!decode(&valid[..cut]));
    }
    for _ in 0..RANDOM {
        let mut flipped = valid.to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..flipped.len());
            flipped[at] = rng.u8(..);
        }
        errors += usize::from(!decode(&flipped));
        let len = rng.usize(..64);
        let mut random: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if rng.bool() && !random.is_empty() {
            random[0] = codec::FORMAT_VERSION; // get past the version check
        }
        errors += usize::from(!decode(&random));
    }
    assert!(
        errors > 0,
        "{name}: nothing was refused, so nothing was tested"
    );
}

fn failure() -> TaskError {
    let mut e = TaskError::new(TaskErrorKind::Panic, "boom".to_string());
    e.job = "job-1".into();
    e.task = 3;
    e.stderr_tail = Some("line one\nline two".into());
    e
}

#[test]
fn outcomes() {
    let ok = Outcome::Ok(codec::encode(&vec![1.5f64; 8]).unwrap())
        .to_stored()
        .unwrap();
    fuzz("outcome ok", &ok, |b| Outcome::from_stored(b).is_ok());
    let err = Outcome::Err(failure()).to_stored().unwrap();
    fuzz("outcome err", &err, |b| Outcome::from_stored(b).is_ok());
}

#[test]
fn envelopes() {
    let envelope = TaskEnvelope {
        job: "job-1".into(),
        task: 7,
        attempt: 1,
        function: "crate::f".into(),
        signature: 42,
        binary: "ab".repeat(32),
        args: codec::encode(&(1u64, "two".to_string())).unwrap(),
    };
    let bytes = codec::encode(&envelope).unwrap();
    fuzz("envelope", &bytes, |b| {
        codec::decode::<TaskEnvelope>(b).is_ok()
    });
}

#[test]
fn packs() {
    let mut pack = PackWriter::new();
    for i in 0..5u64 {
        pack.push(i, &vec![i as u8; 10 + i as usize]);
    }
    let bytes = pack.finish();
    fuzz("pack", &bytes, |b| {
        read_pack(&Bytes::copy_from_slice(b)).is_ok()
    });
}

#[test]
fn manifests() {
    let spec = JobSpec {
        id: "job-1".into(),
        function: "crate::f".into(),
        signature: 42,
        binary: "ab".repeat(32),
        task_count: 4,
        options: TaskOptions::new().retries(2),
    };
    let bytes = JobManifest::new(&spec, "local", "file://x")
        .to_json()
        .unwrap();
    fuzz("manifest", &bytes, |b| JobManifest::from_json(b).is_ok());
}

#[test]
fn events() {
    let records: Vec<TaskRecord> = (0..3)
        .map(|i| TaskRecord {
            task: i,
            attempt: 0,
            executor: Some("local".into()),
            worker: Some(1),
            node: None,
            started_us: Some(10),
            finished_us: 20,
            ok: i != 1,
            retried: i == 1,
            requeues: 0,
            region: (i == 2).then(|| "west".into()),
        })
        .collect();
    let bytes = serde_json::to_vec(&records).unwrap();
    fuzz("events", &bytes, |b| parse_events(b).is_ok());
}

#[test]
fn user_values_with_hostile_lengths() {
    // Strings and byte buffers whose length prefix claims far more than the bytes hold.
    for value in [
        codec::encode_versioned(&"text".repeat(100)).unwrap(),
        codec::encode_versioned(&serde_bytes::ByteBuf::from(vec![9u8; 300])).unwrap(),
        codec::encode_versioned(&vec!["a".to_string(); 50]).unwrap(),
    ] {
        fuzz("user value", &value, |b| {
            codec::decode_versioned::<String>(b).is_ok()
                | codec::decode_versioned::<serde_bytes::ByteBuf>(b).is_ok()
                | codec::decode_versioned::<Vec<String>>(b).is_ok()
        });
    }
}

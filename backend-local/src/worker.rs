//! The worker side: the loop a worker process runs when the local backend starts it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::ops::Range;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redwood_core::raw::binary::current_binary_hash;
use redwood_core::raw::envelope::TaskEnvelope;
use redwood_core::raw::worker::{WorkerIo, execute, install_panic_hook, install_worker_io};
use redwood_core::{Error, ErrorKind, Result};

use std::io::{Read, Write};

use redwood_core::raw::envelope::Outcome;
use redwood_core::{TaskError, TaskErrorKind};

use crate::protocol::{FromWorker, ToWorker, decode_body, encode_frame, read_frame, write_message};

fn too_large(envelope: &TaskEnvelope, why: String) -> Outcome {
    let mut e = TaskError::new(
        TaskErrorKind::Decode,
        format!("the result cannot be sent back: {why}"),
    );
    e.function = envelope.function.clone();
    e.job = envelope.job.clone();
    e.task = envelope.task;
    e.attempt = envelope.attempt;
    Outcome::Err(e)
}

pub use redwood_core::raw::worker::WORKER_ENV;

/// The value of [`WORKER_ENV`] for local workers.
pub const WORKER_MODE: &str = "local";

struct Channel {
    reader: BufReader<File>,
    writer: BufWriter<File>,
    /// Tasks read while a fetch waited for its answer.
    queued: VecDeque<(u64, TaskEnvelope)>,
    next_fetch: u64,
}

impl Channel {
    fn read(&mut self) -> std::io::Result<Option<ToWorker>> {
        match read_frame(&mut self.reader)? {
            Some(body) => decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Maps the file of a `FetchedFile` answer (no copy: the pages are shared with the client
    /// and every other worker) and tells the client it may delete it; the mapping stays valid
    /// after the file is unlinked.
    fn read_shared(&mut self, id: u64, path: &str, len: u64) -> std::io::Result<Bytes> {
        let mapped = std::fs::File::open(path).and_then(|file| {
            // SAFETY: the client writes the file completely before naming it and never
            // changes it afterwards; it only unlinks it, which leaves the mapping intact.
            unsafe { memmap2::Mmap::map(&file) }
        });
        write_message(&mut self.writer, &FromWorker::Released { id })?;
        let mapped = mapped?;
        if mapped.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{path} has {} bytes, not {len}", mapped.len()),
            ));
        }
        Ok(Bytes::from_owner(mapped))
    }

    /// Reads the raw payload that follows a `Fetched` header.
    fn read_payload(&mut self, len: u64) -> std::io::Result<Bytes> {
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload)?;
        Ok(Bytes::from(payload))
    }

    fn next_task(&mut self) -> std::io::Result<Option<(u64, TaskEnvelope)>> {
        if let Some(t) = self.queued.pop_front() {
            return Ok(Some(t));
        }
        loop {
            match self.read()? {
                Some(ToWorker::Run { seq, envelope }) => return Ok(Some((seq, envelope))),
                Some(ToWorker::Fetched { result, .. }) => {
                    // An answer nobody waits for: skip its payload.
                    if let Ok(len) = result {
                        self.read_payload(len)?;
                    }
                }
                Some(ToWorker::FetchedFile { id, .. }) => {
                    write_message(&mut self.writer, &FromWorker::Released { id })?;
                }
                None => return Ok(None),
            }
        }
    }
}

struct PipeIo(Arc<Mutex<Channel>>);

impl WorkerIo for PipeIo {
    fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let broken = |e: std::io::Error| {
            Error::new(
                ErrorKind::Backend,
                "the pipe to the client broke during a fetch",
            )
            .with_context("key", key)
            .with_source(e)
        };
        let mut ch = self
            .0
            .lock()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "worker channel lock poisoned"))?;
        let id = ch.next_fetch;
        ch.next_fetch += 1;
        let request = FromWorker::Fetch {
            id,
            key: key.to_string(),
            range: range.map(|r| (r.start, r.end)),
        };
        write_message(&mut ch.writer, &request).map_err(broken)?;
        loop {
            match ch.read().map_err(broken)? {
                Some(ToWorker::Fetched { id: got, result }) => {
                    let answer = match result {
                        Ok(len) => Ok(ch.read_payload(len).map_err(broken)?),
                        Err(msg) => Err(msg),
                    };
                    if got != id {
                        continue; // an answer nobody waits for any more
                    }
                    return answer.map_err(|msg| {
                        Error::new(ErrorKind::Storage, msg).with_context("key", key)
                    });
                }
                Some(ToWorker::FetchedFile { id: got, path, len }) => {
                    let read = ch.read_shared(got, &path, len);
                    if got != id {
                        continue;
                    }
                    return read.map_err(|e| {
                        Error::new(
                            ErrorKind::Backend,
                            "cannot read the shared copy of an object",
                        )
                        .with_context("key", key)
                        .with_context("file", &path)
                        .with_source(e)
                    });
                }
                Some(ToWorker::Run { seq, envelope }) => ch.queued.push_back((seq, envelope)),
                None => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        "the client closed the pipe during a fetch",
                    ));
                }
            }
        }
    }
}

inventory::submit! {
    redwood_core::raw::worker::WorkerMode {
        name: WORKER_MODE,
        also_when: &[],
        serve,
    }
}

/// Where [`move_stdout_aside`] left the reply pipe (a file descriptor number).
const REPLY_FD_ENV: &str = "REDWOOD_REPLY_FD";

/// Moves the reply pipe off stdout before anything can write there: a duplicate of stdout is
/// kept (its number in `REDWOOD_REPLY_FD`) and stdout is pointed at `/dev/null` until
/// [`serve`] points it at stderr. A test binary calls
/// it before `main`, since libtest prints to stdout before a test can start the worker.
/// Does nothing in a process that is not a local worker, or when done already.
///
/// # Safety
/// Call it while this process has one thread (before `main`): it changes the environment.
pub unsafe fn move_stdout_aside() {
    if std::env::var_os(WORKER_ENV).is_none_or(|m| m != WORKER_MODE)
        || std::env::var_os(REPLY_FD_ENV).is_some()
    {
        return;
    }
    // What libtest prints before the worker serves goes nowhere; `serve` points stdout at
    // stderr then.
    // SAFETY: plain fd calls on a path literal; one thread (the caller's promise).
    let fd = unsafe { libc::dup(1) };
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 || null < 0 || unsafe { libc::dup2(null, 1) } < 0 {
        return; // `serve` tries again and says what failed
    }
    // SAFETY: `null` is ours and duplicated onto stdout.
    unsafe { libc::close(null) };
    // SAFETY: one thread (the caller's promise).
    unsafe { std::env::set_var(REPLY_FD_ENV, fd.to_string()) };
}

/// The reply pipe: the one [`move_stdout_aside`] kept, else a duplicate of stdout made now
/// (stdout itself then pointed at stderr, so `println!` in a remote function cannot corrupt
/// the protocol).
fn reply_fd() -> Option<i32> {
    if let Some(fd) = std::env::var(REPLY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    {
        // SAFETY: plain fd duplication at start-up.
        return (unsafe { libc::dup2(2, 1) } >= 0).then_some(fd);
    }
    // SAFETY: plain fd duplication at start-up, before any other thread uses stdout.
    unsafe {
        let fd = libc::dup(1);
        (fd >= 0 && libc::dup2(2, 1) >= 0).then_some(fd)
    }
}

/// Serves tasks on stdin until the client closes it, then exits the process.
pub fn serve() -> ! {
    let Some(reply_fd) = reply_fd() else {
        eprintln!("redwood worker: cannot set up its reply pipe");
        std::process::exit(70);
    };
    // SAFETY: fd 0 and `reply_fd` are open and owned by nothing else from here on.
    let (stdin, reply) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(reply_fd)) };
    watch_lifeline();
    install_panic_hook();
    let binary = match current_binary_hash() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("redwood worker: {e}");
            std::process::exit(70);
        }
    };
    let channel = Arc::new(Mutex::new(Channel {
        reader: BufReader::with_capacity(1 << 16, stdin),
        writer: BufWriter::with_capacity(1 << 16, reply),
        queued: VecDeque::new(),
        next_fetch: 0,
    }));
    install_worker_io(Box::new(PipeIo(channel.clone())));
    let exit_code = match run(&channel, binary) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("redwood worker: {e}");
            71
        }
    };
    std::process::exit(exit_code)
}

/// Watches the client's lifeline (see `process::LIFELINE_ENV`) on a thread: at its end of file
/// the client is gone, and the worker ends its process group (itself and whatever its task
/// started) at once, even in the middle of a task.
fn watch_lifeline() {
    let Some(fd) = std::env::var(crate::process::LIFELINE_ENV)
        .ok()
        .and_then(|v| v.parse::<libc::c_int>().ok())
    else {
        return;
    };
    // Not for the processes a task starts.
    // SAFETY: the fd was handed to this process for this purpose; setting close-on-exec on it.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let watch = move || {
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: reading into a live one-byte buffer from an fd this process owns.
            let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break; // end of file (or an error): the client is gone
        }
        // SAFETY: signalling this process's own group, only when the worker leads it.
        unsafe {
            if libc::getpgrp() == libc::getpid() {
                libc::kill(0, libc::SIGKILL);
            }
            libc::_exit(72);
        }
    };
    if std::thread::Builder::new()
        .name("redwood-lifeline".into())
        .spawn(watch)
        .is_err()
    {
        eprintln!("redwood worker: cannot watch the client's lifeline");
    }
}

fn run(channel: &Mutex<Channel>, binary: &str) -> std::io::Result<()> {
    let lock = || {
        channel
            .lock()
            .map_err(|_| std::io::Error::other("worker channel lock poisoned"))
    };
    write_message(
        &mut lock()?.writer,
        &FromWorker::Ready {
            pid: std::process::id(),
            binary: binary.to_string(),
        },
    )?;
    loop {
        let next = lock()?.next_task()?;
        let Some((seq, envelope)) = next else {
            return Ok(());
        };
        let outcome = execute(&envelope, binary);
        let done = FromWorker::Done { seq, outcome };
        let frame = match encode_frame(&done) {
            Ok(frame) => frame,
            // Too large for the pipe: the task fails, the worker goes on.
            Err(e) => encode_frame(&FromWorker::Done {
                seq,
                outcome: too_large(&envelope, e.to_string()),
            })?,
        };
        let mut ch = lock()?;
        ch.writer.write_all(&frame)?;
        ch.writer.flush()?;
    }
}

//! One worker process as the client sees it: spawning it, feeding its stdin, reading its
//! replies, keeping the tail of its stderr, and reporting how it exited.

use std::collections::VecDeque;

use bytes::Bytes;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use redwood_core::raw::worker::parse_task_marker;

use crate::protocol::{FromWorker, MAX_FRAME, decode_body};
use crate::worker::{WORKER_ENV, WORKER_MODE};

/// How much of a worker's stderr is kept for task errors.
const TAIL_BYTES: usize = 8 * 1024;

/// What a worker process reports to the pool.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// A message from worker `id`.
    Message(u32, FromWorker),
    /// Worker `id` exited (or its pipes broke).
    Exited {
        id: u32,
        status: Option<ExitStatus>,
        stderr_tail: String,
        error: Option<String>,
    },
}

/// The client's handle on one worker process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    pub(crate) id: u32,
    pub(crate) pid: Option<u32>,
    pub(crate) tx: mpsc::UnboundedSender<Bytes>,
}

impl WorkerProcess {
    /// Kills the process and whatever its task started (SIGKILL to its process group); its
    /// `Exited` event follows.
    pub(crate) fn kill(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: sending a signal to the group of a child we spawned (it leads the group)
            // and have not yet reaped.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

/// The environment variable naming the file descriptor of a worker's lifeline: the read end of
/// a pipe whose only write end this client holds. When the client dies, however it dies, the
/// kernel closes that end, the worker reads end-of-file and exits with its process group.
pub(crate) const LIFELINE_ENV: &str = "REDWOOD_LIFELINE_FD";

/// The lifeline pipe of this client process: (read end, write end), both close-on-exec here;
/// the write end is never written and never closed while the process lives.
fn lifeline() -> std::io::Result<&'static (std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    static LIFELINE: std::sync::OnceLock<(OwnedFd, OwnedFd)> = std::sync::OnceLock::new();
    if let Some(pipe) = LIFELINE.get() {
        return Ok(pipe);
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds this process then owns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let pipe = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A racing first call loses its pipe, which closes: harmless.
    Ok(LIFELINE.get_or_init(|| pipe))
}

/// Starts worker `id` from `exe` and the tasks that serve its pipes.
pub(crate) fn spawn_worker(
    id: u32,
    exe: &Path,
    events: mpsc::UnboundedSender<WorkerEvent>,
) -> std::io::Result<WorkerProcess> {
    let lifeline_fd = lifeline()?.0.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .env(WORKER_ENV, WORKER_MODE)
        .env("REDWOOD_WORKER_ID", id.to_string())
        .env(LIFELINE_ENV, lifeline_fd.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches what its task started too.
        .process_group(0)
        .kill_on_drop(true);
    // A worker started from this executable need not hash it again (the release bench
    // program is 136 MB with debug info; hashing it was 45% of a packed run's CPU).
    if let Some(known) = redwood_core::raw::binary::hash_env_value() {
        command.env(redwood_core::raw::binary::HASH_ENV, known);
    }
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The worker keeps the lifeline's read end across exec (and only that end).
            if libc::fcntl(lifeline_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => return Err(std::io::Error::other("worker pipes were not created")),
        };
    widen_pipe(stdin.as_raw_fd());
    widen_pipe(stdout.as_raw_fd());
    widen_pipe(stderr.as_raw_fd());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(stdin, rx));
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
    let stderr = blocking_pipe(stderr)?;
    let stderr_tail = tail.clone();
    let stderr_task = tokio::task::spawn_blocking(move || stderr_loop(id, stderr, stderr_tail));
    tokio::spawn(async move {
        let error = read_loop(id, stdout, &events).await.err();
        let status = child.wait().await.ok();
        // Let the stderr reader drain what the process wrote last.
        let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
        let stderr_tail = {
            let t = tail.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).into_owned()
        };
        let _ = events.send(WorkerEvent::Exited {
            id,
            status,
            stderr_tail,
            error: error.map(|e| e.to_string()),
        });
    });
    Ok(WorkerProcess { id, pid, tx })
}

/// Writes queued frames to the worker's stdin, many per write when they pile up.
async fn write_loop(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 16);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            if chunk.len() >= BIG_WRITE {
                // A large payload goes out as it is, after what was batched before it.
                if !write(&mut stdin, &mut batch).await || stdin.write_all(&chunk).await.is_err() {
                    return;
                }
            } else {
                batch.extend_from_slice(&chunk);
            }
            if batch.len() < (1 << 20) {
                next = rx.try_recv().ok();
            }
        }
        if !write(&mut stdin, &mut batch).await || stdin.flush().await.is_err() {
            return; // the reader sees the exit
        }
    }
}

/// Chunks at least this large are written without copying them into the batch.
const BIG_WRITE: usize = 1 << 16;

async fn write(stdin: &mut ChildStdin, batch: &mut Vec<u8>) -> bool {
    let ok = batch.is_empty() || stdin.write_all(batch).await.is_ok();
    batch.clear();
    ok
}

/// Makes a pipe's kernel buffer 1 MiB (from 64 KiB), so large transfers take far fewer
/// wake-ups. Best effort: the system may cap it.
fn widen_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on a pipe fd this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Reads reply frames until the pipe closes.
async fn read_loop(
    id: u32,
    stdout: ChildStdout,
    events: &mpsc::UnboundedSender<WorkerEvent>,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("worker sent a {len}-byte frame"),
            ));
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        let msg: FromWorker = decode_body(&body)?;
        if events.send(WorkerEvent::Message(id, msg)).is_err() {
            return Ok(()); // the pool is gone
        }
    }
}

/// The longest piece of a worker's stderr forwarded as one log line: a longer line (or output
/// without newlines) is forwarded in pieces of this size, never buffered whole.
const MAX_LINE: usize = 16 * 1024;

/// How long the stderr reader waits once it has read all there was, so a worker running many
/// short tasks (each writes its task marker) costs a few wake-ups a second, not one a task.
/// Lines reach the log at most this much later; a crash's last lines are drained at its exit.
const STDERR_PAUSE: Duration = Duration::from_millis(10);

/// The worker's stderr as a plain blocking pipe, read on a thread of its own: while that thread
/// pauses, the worker's writes wake nothing.
fn blocking_pipe(stderr: ChildStderr) -> std::io::Result<std::fs::File> {
    let fd = stderr.into_owned_fd()?;
    // SAFETY: fcntl on a pipe fd this process owns.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(std::fs::File::from(fd))
}

/// Forwards the worker's stderr lines to ours, each with the task that wrote it, and keeps the
/// tail of what the current task wrote: the worker marks where each task starts
/// ([`TASK_MARKER`](redwood_core::raw::worker::TASK_MARKER)), and a marker empties the tail,
/// so a crashed task's error carries its own output only. Runs until the pipe closes.
fn stderr_loop(id: u32, stderr: std::fs::File, tail: Arc<Mutex<VecDeque<u8>>>) {
    let mut lines = std::io::BufReader::with_capacity(1 << 16, stderr);
    let mut line = Vec::with_capacity(256);
    let mut task: Option<u64> = None;
    loop {
        if lines.buffer().is_empty() {
            std::thread::sleep(STDERR_PAUSE);
        }
        line.clear();
        match read_piece(&mut lines, &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, index, _)) = parse_task_marker(&text) {
            t.clear();
            task = Some(index);
            continue;
        }
        for &b in &line {
            if t.len() == TAIL_BYTES {
                t.pop_front();
            }
            t.push_back(b);
        }
        drop(t);
        match task {
            Some(task) => {
                tracing::info!(target: "redwood::worker", worker = id, task, "{}", text.trim_end())
            }
            None => tracing::info!(target: "redwood::worker", worker = id, "{}", text.trim_end()),
        }
    }
}

/// Reads up to a newline or [`MAX_LINE`] bytes, whichever comes first; 0 at the end.
fn read_piece<R: std::io::BufRead>(reader: &mut R, piece: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(piece.len());
        }
        let room = MAX_LINE - piece.len();
        let take = available.len().min(room);
        let (used, done) = match available[..take].iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (take, take == room),
        };
        piece.extend_from_slice(&available[..used]);
        reader.consume(used);
        if done {
            return Ok(piece.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_without_newlines_is_read_in_capped_pieces() {
        let mut text = vec![b'x'; MAX_LINE * 3 + 10];
        text.extend_from_slice(b"\nshort\n");
        let mut reader = std::io::BufReader::new(&text[..]);
        let mut sizes = Vec::new();
        loop {
            let mut piece = Vec::new();
            match read_piece(&mut reader, &mut piece).unwrap() {
                0 => break,
                n => sizes.push(n),
            }
        }
        assert_eq!(sizes, vec![MAX_LINE, MAX_LINE, MAX_LINE, 11, 6]);
    }
}

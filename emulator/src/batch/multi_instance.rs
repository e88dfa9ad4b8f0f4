//! Multi-instance (MPI) tasks: the `mpirun` of our own that starts the ranks as local processes,
//! and the coordination command every node of the task runs first.

use super::exec::{RunEnd, shell};
use super::placement::Placement;
use super::server::AccountState;

/// The folder (under the emulator's root) with the emulator's `mpirun`.
pub(super) const MPI_BIN: &str = "mpi-bin";

/// Writes the emulator's `mpirun` (and `mpiexec`), which multi-instance tasks find first on
/// their `PATH`: it starts the ranks as local processes, since every node is this machine.
pub fn install_mpirun(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(MPI_BIN);
    std::fs::create_dir_all(&dir)?;
    for name in ["mpirun", "mpiexec"] {
        let path = dir.join(name);
        std::fs::write(&path, include_str!("mpirun.sh"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Multi-instance: runs the coordination command on every instance at once (the others write
/// their stdout/stderr in their own task folder, the primary into `coordination-*.txt`).
pub(super) async fn coordinate(
    state: &AccountState,
    p: &Placement,
    coordination: &str,
) -> Result<(), RunEnd> {
    let mut runs = Vec::new();
    for (node, node_dir) in p.instances() {
        let task_dir = p.task_dir(&node_dir);
        std::fs::create_dir_all(task_dir.join("wd")).map_err(|e| {
            RunEnd::NotStarted(format!("cannot create {}: {e}", task_dir.display()))
        })?;
        let (out, err) = if node == p.node {
            ("coordination-stdout.txt", "coordination-stderr.txt")
        } else {
            ("stdout.txt", "stderr.txt")
        };
        let files = (
            std::fs::File::create(task_dir.join(out)),
            std::fs::File::create(task_dir.join(err)),
        );
        let (Ok(stdout), Ok(stderr)) = files else {
            return Err(RunEnd::NotStarted(
                "cannot create the coordination output files".into(),
            ));
        };
        let mut command = shell(state, p, coordination, (&node, &node_dir), &task_dir);
        command.stdout(stdout).stderr(stderr);
        runs.push(async move { command.status().await });
    }
    for status in futures::future::join_all(runs).await {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(RunEnd::Exited(s.code().unwrap_or(-1))),
            Err(e) => {
                return Err(RunEnd::NotStarted(format!(
                    "cannot start the coordination command: {e}"
                )));
            }
        }
    }
    Ok(())
}

//! Multi-node (MPI) tasks: the shape a caller asks for, and the world a rank finds itself in.

use serde::{Deserialize, Serialize};

/// How a multi-node task is laid out: `nodes` machines, `procs_per_node` ranks on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpiShape {
    /// How many nodes the task spans.
    pub nodes: u32,
    /// How many ranks run on each node.
    pub procs_per_node: u32,
}

impl MpiShape {
    /// The number of ranks in the task's world.
    pub fn ranks(&self) -> u32 {
        self.nodes.saturating_mul(self.procs_per_node)
    }
}

/// Where this process sits in the MPI world of the task it runs, from the launcher's
/// environment. Read it with [`crate::context::mpi`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpiWorld {
    /// This process's rank (0 is the root, whose return value is the task's result).
    pub rank: u32,
    /// The number of ranks.
    pub size: u32,
    /// The rank on this node, when the launcher says.
    pub local_rank: Option<u32>,
    /// The task's hosts (`AZ_BATCH_HOST_LIST` on Azure Batch), one per node.
    pub hosts: Vec<String>,
    /// Ranks per node, as asked for.
    pub procs_per_node: u32,
}

impl MpiWorld {
    /// Whether this is rank 0, the rank whose result is stored.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Reads the world from an MPI launcher's variables (MPICH/Intel MPI `PMI_RANK`/`PMI_SIZE`,
    /// Open MPI `OMPI_COMM_WORLD_*`, PMIx `PMIX_RANK`) and the host list. `None` when no launcher
    /// variable says the rank.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        hosts: &str,
        shape: MpiShape,
    ) -> Option<MpiWorld> {
        let number = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| var(n).and_then(|v| v.trim().parse::<u32>().ok()))
        };
        let rank = number(&["PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"])?;
        let size = number(&["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"]).unwrap_or(shape.ranks());
        let local_rank = number(&["MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"]);
        let hosts = hosts
            .split([',', ';', ' '])
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        Some(MpiWorld {
            rank,
            size,
            local_rank,
            hosts,
            procs_per_node: shape.procs_per_node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_hydra_and_open_mpi_variables() {
        let shape = MpiShape {
            nodes: 2,
            procs_per_node: 2,
        };
        let w = MpiWorld::from_env(
            vars(&[
                ("PMI_RANK", "3"),
                ("PMI_SIZE", "4"),
                ("MPI_LOCALRANKID", "1"),
            ]),
            "10.0.0.4,10.0.0.5",
            shape,
        )
        .unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (3, 4, Some(1)));
        assert_eq!(w.hosts, ["10.0.0.4", "10.0.0.5"]);
        assert!(!w.is_root());
        let w = MpiWorld::from_env(vars(&[("OMPI_COMM_WORLD_RANK", "0")]), "", shape).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (0, 4, None));
        assert!(w.is_root());
        assert!(MpiWorld::from_env(vars(&[]), "h", shape).is_none());
    }
}

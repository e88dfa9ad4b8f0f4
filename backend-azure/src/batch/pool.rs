//! The pool tasks run on: reused by id, or created from the configuration; then waited for
//! until its nodes are allocated (with a progress bar), failing clearly when they cannot be.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::config::{ImageConfig, PoolConfig};
use redwood_core::{Error, ErrorKind, MpiShape, Result};
use serde_json::{Value, json};

use super::client::BatchClient;

/// The body of an add-pool request for `pool`.
pub(crate) fn pool_body(pool: &PoolConfig) -> Value {
    let image = pool.image.clone().unwrap_or_default();
    let ImageConfig {
        publisher,
        offer,
        sku,
        version,
        node_agent_sku_id,
    } = image;
    let mut vm = json!({
        "imageReference": {
            "publisher": publisher, "offer": offer, "sku": sku,
            "version": version.unwrap_or_else(|| "latest".into()),
        },
        "nodeAgentSKUId": node_agent_sku_id,
    });
    if let Some(image) = &pool.container_image {
        vm["containerConfiguration"] =
            json!({"type": "dockerCompatible", "containerImageNames": [image]});
    }
    let mut body = json!({
        "id": pool.id,
        "vmSize": pool.vm_size,
        "virtualMachineConfiguration": vm,
        "taskSlotsPerNode": pool.task_slots_per_node.max(1),
        "enableInterNodeCommunication": pool.inter_node_communication,
        "metadata": super::leftovers::pool_metadata(pool.keep),
    });
    match &pool.autoscale_formula {
        Some(formula) => {
            body["enableAutoScale"] = json!(true);
            body["autoScaleFormula"] = json!(formula);
        }
        None => {
            body["targetDedicatedNodes"] = json!(pool.dedicated);
            body["targetLowPriorityNodes"] = json!(pool.spot);
        }
    }
    if let Some(command) = &pool.start_task {
        body["startTask"] = json!({"commandLine": command, "waitForSuccess": true});
    }
    body
}

/// How an existing pool differs from what the configuration would create, in the settings a
/// reused pool keeps (`setting: the pool's value (configured: value)`).
pub(crate) fn differences(pool: &PoolConfig, existing: &Value) -> Vec<String> {
    let wanted = pool_body(pool);
    let text = |v: &Value| match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let image = "/virtualMachineConfiguration/imageReference";
    let settings = [
        ("vm_size", "/vmSize".to_string()),
        ("task_slots_per_node", "/taskSlotsPerNode".to_string()),
        (
            "inter_node_communication",
            "/enableInterNodeCommunication".to_string(),
        ),
        ("start_task", "/startTask/commandLine".to_string()),
        (
            "container_image",
            "/virtualMachineConfiguration/containerConfiguration/containerImageNames/0".to_string(),
        ),
        ("image.publisher", format!("{image}/publisher")),
        ("image.offer", format!("{image}/offer")),
        ("image.sku", format!("{image}/sku")),
    ];
    settings
        .iter()
        .filter_map(|(name, pointer)| {
            let want = wanted.pointer(pointer).unwrap_or(&Value::Null);
            let have = existing.pointer(pointer).unwrap_or(&Value::Null);
            // The service answers some strings in lower case, and leaves defaults out.
            let same = text(want).eq_ignore_ascii_case(&text(have))
                || (*name == "inter_node_communication" && have.is_null() && want == false)
                || (*name == "task_slots_per_node" && have.is_null() && want == 1);
            (!same).then(|| format!("{name} {} (configured: {})", text(have), text(want)))
        })
        .collect()
}

/// Makes sure the pool exists; returns whether this call created it.
pub(crate) async fn ensure_pool(client: &BatchClient, pool: &PoolConfig) -> Result<bool> {
    let path = format!("/pools/{}", pool.id);
    match client.get("get_pool", &path).await {
        Ok(existing) => {
            tracing::info!(pool = %pool.id, "reusing the pool");
            let differences = differences(pool, &existing);
            if !differences.is_empty() {
                tracing::warn!(
                    pool = %pool.id,
                    "Batch pool `{}` exists and is reused as it is, which differs from the \
                     configuration: {}. Delete it (or set another `pool.id`) to have it made as \
                     configured",
                    pool.id,
                    differences.join("; ")
                );
            }
            grow(client, pool, &existing).await?;
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::info!(pool = %pool.id, vm_size = %pool.vm_size, "creating the pool");
            match client.post("add_pool", "/pools", &pool_body(pool)).await {
                Ok(_) => Ok(true),
                // Created meanwhile (or by a first try whose reply was lost).
                Err(e) if e.service_code() == Some("PoolExists") => Ok(false),
                Err(e) => Err(e.with_context("pool", &pool.id)),
            }
        }
        Err(e) => Err(e.with_context("pool", &pool.id)),
    }
}

/// Resizes a reused pool (without autoscale) up to the configured node counts, e.g. one that
/// was scaled down to 0 after an earlier run. A larger pool is left as it is.
async fn grow(client: &BatchClient, pool: &PoolConfig, existing: &Value) -> Result<()> {
    if pool.autoscale_formula.is_some() || existing["enableAutoScale"].as_bool() == Some(true) {
        return Ok(());
    }
    let dedicated = existing["targetDedicatedNodes"].as_u64().unwrap_or(0);
    let spot = existing["targetLowPriorityNodes"].as_u64().unwrap_or(0);
    let (want_dedicated, want_spot) = (u64::from(pool.dedicated), u64::from(pool.spot));
    if dedicated >= want_dedicated && spot >= want_spot {
        return Ok(());
    }
    if existing["allocationState"].as_str() == Some("resizing") {
        return Ok(()); // already changing; wait for it
    }
    let body = json!({
        "targetDedicatedNodes": dedicated.max(want_dedicated),
        "targetLowPriorityNodes": spot.max(want_spot),
    });
    tracing::info!(pool = %pool.id, dedicated = want_dedicated, spot = want_spot, "resizing the pool");
    client
        .post("resize_pool", &format!("/pools/{}/resize", pool.id), &body)
        .await
        .map(|_| ())
        .map_err(|e| e.with_context("pool", &pool.id))
}

/// Waits until the pool's allocation is steady with nodes, showing progress on a terminal.
/// A pool that ends with no nodes and a resize error is an error naming the pool and the code.
pub(crate) async fn wait_allocated(
    client: &BatchClient,
    pool: &PoolConfig,
    timeout: Duration,
    poll: Duration,
    progress: bool,
) -> Result<PoolFacts> {
    let path = format!("/pools/{}", pool.id);
    let started = Instant::now();
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("waiting for nodes of Batch pool `{}`", pool.id));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let result = loop {
        let p = client.get("get_pool", &path).await?;
        let current = p["currentDedicatedNodes"].as_u64().unwrap_or(0)
            + p["currentLowPriorityNodes"].as_u64().unwrap_or(0);
        let target = p["targetDedicatedNodes"].as_u64().unwrap_or(0)
            + p["targetLowPriorityNodes"].as_u64().unwrap_or(0);
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "waiting for nodes of Batch pool `{}`: {current}/{target}",
                pool.id
            ));
        }
        let steady = p["allocationState"].as_str() == Some("steady");
        let errors: Vec<String> = p["resizeErrors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["code"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        if current > 0 && (steady || current >= target) {
            if !errors.is_empty() {
                tracing::warn!(pool = %pool.id, errors = ?errors, "the pool has fewer nodes than asked for");
            }
            break Ok(PoolFacts::of(&p));
        }
        if steady && current == 0 {
            let why = if errors.is_empty() {
                "it has no nodes and asks for none (set `dedicated`, `spot` or an autoscale \
                 formula that gives it nodes)"
                    .to_string()
            } else {
                format!("its nodes could not be allocated ({})", errors.join("; "))
            };
            break Err(Error::new(
                ErrorKind::Backend,
                format!("Batch pool `{}`: {why}", pool.id),
            )
            .with_context("batch account", client.account()));
        }
        if started.elapsed() > timeout {
            break Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "Batch pool `{}` has {current} of {target} nodes after {timeout:?} \
                     (raise `pool.allocation_timeout`, or check the account's core quota)",
                    pool.id
                ),
            ));
        }
        tokio::time::sleep(poll).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// What submissions check against: how the allocated pool is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolFacts {
    /// The pool id.
    pub id: String,
    /// `enableInterNodeCommunication`.
    pub inter_node: bool,
    /// `taskSlotsPerNode`.
    pub slots_per_node: u64,
    /// Target dedicated + spot nodes (unknown under autoscale).
    pub nodes: Option<u64>,
}

impl PoolFacts {
    /// Reads them from a pool's JSON.
    pub fn of(pool: &Value) -> Self {
        let n = |name: &str| pool[name].as_u64().unwrap_or(0);
        PoolFacts {
            id: pool["id"].as_str().unwrap_or_default().to_string(),
            inter_node: pool["enableInterNodeCommunication"].as_bool() == Some(true),
            slots_per_node: pool["taskSlotsPerNode"].as_u64().unwrap_or(1),
            nodes: (pool["enableAutoScale"].as_bool() != Some(true))
                .then(|| n("targetDedicatedNodes") + n("targetLowPriorityNodes")),
        }
    }

    /// Whether an MPI task of `shape` can run here; the error says what to change.
    pub fn check_mpi(&self, shape: MpiShape) -> Result<()> {
        let refuse = |why: String| {
            Err(Error::new(
                ErrorKind::Config,
                format!(
                    "TaskOptions::mpi({}, {}) cannot run on Batch pool `{}`: {why}",
                    shape.nodes, shape.procs_per_node, self.id
                ),
            ))
        };
        if !self.inter_node {
            return refuse(
                "it was made without inter-node communication (set \
                 `inter_node_communication = true` in the pool's configuration and use a new \
                 pool id: Batch cannot change it on an existing pool)"
                    .into(),
            );
        }
        if self.slots_per_node != 1 {
            return refuse(format!(
                "it runs {} tasks per node, and Batch runs multi-instance tasks only on pools \
                 with `task_slots_per_node = 1`",
                self.slots_per_node
            ));
        }
        if let Some(nodes) = self.nodes
            && u64::from(shape.nodes) > nodes
        {
            return refuse(format!(
                "it has {nodes} nodes (raise `dedicated` or `spot`)"
            ));
        }
        Ok(())
    }
}

/// How many nodes a pool has, for the warning about an idle pool left running.
pub(crate) async fn node_count(client: &BatchClient, pool: &str) -> Result<u64> {
    let p = client.get("get_pool", &format!("/pools/{pool}")).await?;
    Ok(p["currentDedicatedNodes"].as_u64().unwrap_or(0)
        + p["currentLowPriorityNodes"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpi_needs_inter_node_communication_one_slot_and_enough_nodes() {
        let shape = MpiShape {
            nodes: 2,
            procs_per_node: 4,
        };
        let pool = |inter: bool, slots: u64, nodes: u64| {
            PoolFacts::of(&json!({"id": "p", "enableInterNodeCommunication": inter,
                "taskSlotsPerNode": slots, "targetDedicatedNodes": nodes}))
        };
        assert!(pool(true, 1, 2).check_mpi(shape).is_ok());
        let e = pool(false, 1, 2).check_mpi(shape).unwrap_err().to_string();
        assert!(
            e.contains("inter_node_communication") && e.contains("`p`"),
            "{e}"
        );
        let e = pool(true, 4, 2).check_mpi(shape).unwrap_err().to_string();
        assert!(e.contains("task_slots_per_node = 1"), "{e}");
        let e = pool(true, 1, 1).check_mpi(shape).unwrap_err().to_string();
        assert!(e.contains("has 1 nodes"), "{e}");
    }

    #[test]
    fn pool_body_follows_the_configuration() {
        let mut pool = PoolConfig::default();
        let b = pool_body(&pool);
        assert_eq!(b["targetDedicatedNodes"], 1);
        assert_eq!(
            b["virtualMachineConfiguration"]["nodeAgentSKUId"],
            "batch.node.ubuntu 22.04"
        );
        pool.autoscale_formula = Some("$TargetDedicatedNodes = 2;".into());
        pool.container_image = Some("ubuntu:22.04".into());
        pool.start_task = Some("echo hi".into());
        let b = pool_body(&pool);
        assert!(b.get("targetDedicatedNodes").is_none());
        assert_eq!(b["enableAutoScale"], true);
        assert_eq!(b["startTask"]["waitForSuccess"], true);
        assert_eq!(
            b["virtualMachineConfiguration"]["containerConfiguration"]["containerImageNames"][0],
            "ubuntu:22.04"
        );
    }

    #[test]
    fn a_reused_pool_names_what_differs_from_the_configuration() {
        let pool = PoolConfig {
            id: "p".into(),
            vm_size: "Standard_D4s_v3".into(),
            start_task: Some("apt-get install -y libfoo".into()),
            ..Default::default()
        };
        let same = pool_body(&pool);
        assert!(
            differences(&pool, &same).is_empty(),
            "{:?}",
            differences(&pool, &same)
        );
        let mut existing = pool_body(&pool);
        existing["vmSize"] = json!("standard_d2s_v3");
        existing["startTask"]["commandLine"] = json!("true");
        assert_eq!(
            differences(&pool, &existing),
            vec![
                "vm_size standard_d2s_v3 (configured: Standard_D4s_v3)".to_string(),
                "start_task true (configured: apt-get install -y libfoo)".to_string(),
            ]
        );
        // Lower case and left-out defaults are not differences.
        let mut lower = pool_body(&pool);
        lower["vmSize"] = json!("standard_d4s_v3");
        lower
            .as_object_mut()
            .map(|o| o.remove("enableInterNodeCommunication"));
        assert!(differences(&pool, &lower).is_empty());
    }
}

//! The pool tasks run on: reused by id, or created from the configuration; then waited for
//! until its nodes are allocated (with a progress bar), failing clearly when they cannot be.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use redwood_core::config::{ImageConfig, PoolConfig};
use redwood_core::{Error, ErrorKind, Result};
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

/// Makes sure the pool exists; returns whether this call created it.
pub(crate) async fn ensure_pool(client: &BatchClient, pool: &PoolConfig) -> Result<bool> {
    let path = format!("/pools/{}", pool.id);
    match client.get("get_pool", &path).await {
        Ok(existing) => {
            tracing::info!(pool = %pool.id, "reusing the pool");
            grow(client, pool, &existing).await?;
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::info!(pool = %pool.id, vm_size = %pool.vm_size, "creating the pool");
            match client.post("add_pool", "/pools", &pool_body(pool)).await {
                Ok(_) => Ok(true),
                // Created meanwhile (or by a first try whose reply was lost).
                Err(e) if e.to_string().contains("PoolExists") => Ok(false),
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
) -> Result<()> {
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
            break Ok(());
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
}

//! `jobctl nodes`: the nodes sharing the daemon's store (on the embedded store,
//! the daemon alone) — a table, `-q` their names, `--json` an array.

use super::render::{self, node_state, nodes_table, rfc3339_ms};
use super::{print_line, Ctx, Error, Outcome};
use serde_json::json;

pub async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let nodes = client.nodes().await?;
    if ctx.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "state": node_state(n),
                    "started_at": rfc3339_ms(n.started_at),
                    "heartbeat_age_ms": n.heartbeat_age_ms,
                    "running": n.running,
                    "max_running": n.max_running,
                })
            })
            .collect();
        print_line(render::pretty(&serde_json::Value::Array(list)))?;
    } else if ctx.quiet {
        for n in &nodes {
            print_line(&n.name)?;
        }
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        print_line(nodes_table(&nodes, now))?;
    }
    Ok(Outcome::Success)
}

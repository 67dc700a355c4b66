//! `jobctl output ID [-o FILE|-]`: the output file of a completed export, to stdout
//! or to FILE. FILE is written under a temporary name next to it and renamed into
//! place once the whole transfer arrived; if the transfer fails, nothing is left
//! behind (and an existing FILE is not touched).

use super::{print_line, Ctx, Error, Outcome};
use serde_json::json;
use std::path::{Path, PathBuf};

pub async fn run(ctx: &Ctx, id: &str, dest: Option<&Path>) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let path = match dest {
        Some(p) if p.as_os_str() != "-" => p,
        _ => {
            let mut out = tokio::io::stdout();
            client.output(id, &mut out).await?;
            return Ok(Outcome::Success);
        }
    };
    let part = part_path(path);
    let io_error = |what: String| {
        move |source| Error::Io {
            what: what.clone(),
            source,
        }
    };
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(io_error(format!("cannot create {}", part.display())))?;
    let result = match client.output(id, &mut file).await {
        Ok(bytes) => file
            .sync_all()
            .await
            .map(|()| bytes)
            .map_err(io_error(format!("cannot write {}", part.display()))),
        Err(e) => Err(Error::Client(e)),
    };
    drop(file);
    let result = match result {
        Ok(bytes) => tokio::fs::rename(&part, path)
            .await
            .map(|()| bytes)
            .map_err(io_error(format!("cannot rename to {}", path.display()))),
        Err(e) => Err(e),
    };
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if ctx.json {
        print_line(json!({ "id": id, "path": path.display().to_string(), "bytes": bytes }))?;
    } else if !ctx.quiet {
        print_line(format_args!("Wrote {bytes} bytes to {}.", path.display()))?;
    }
    Ok(Outcome::Success)
}

/// `dir/.name.jobctl-<pid>.part`, in the same directory so that the rename is atomic.
fn part_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.jobctl-{}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_file_is_a_hidden_sibling() {
        let p = part_path(Path::new("/tmp/out/export.csv"));
        assert_eq!(p.parent(), Some(Path::new("/tmp/out")));
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(name.is_some_and(|n| n.starts_with(".export.csv.jobctl-") && n.ends_with(".part")));
    }
}

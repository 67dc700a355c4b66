//! `jobd-gen OUT_DIR`: writes the man pages and shell completion scripts of `jobd`,
//! `jobctl` and `jobd-http`, generated from the very clap definitions the binaries
//! parse their command lines with, so they cannot drift apart.
//!
//! Layout under OUT_DIR, named as the Debian package installs them:
//!
//! ```text
//! man/jobd.1  man/jobctl.1  man/jobctl-<subcommand>.1 ...  man/jobd-http.1
//! completions/bash/<bin>        -> /usr/share/bash-completion/completions/<bin>
//! completions/zsh/_<bin>        -> /usr/share/zsh/vendor-completions/_<bin>
//! completions/fish/<bin>.fish   -> /usr/share/fish/vendor_completions.d/<bin>.fish
//! ```

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The commands to document: (binary name, its clap definition).
fn commands() -> Vec<(&'static str, clap::Command)> {
    vec![
        ("jobd", jobd::config::Cli::command()),
        ("jobctl", jobd_cli::jobctl::Cli::command()),
        ("jobd-http", jobd_cli::http::Config::command()),
    ]
}

/// Where a shell's completion script for `bin` goes, relative to `completions/`.
fn completion_path(shell: Shell, bin: &str) -> Option<PathBuf> {
    match shell {
        Shell::Bash => Some(Path::new("bash").join(bin)),
        Shell::Zsh => Some(Path::new("zsh").join(format!("_{bin}"))),
        Shell::Fish => Some(Path::new("fish").join(format!("{bin}.fish"))),
        _ => None,
    }
}

fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    let mut written = Vec::new();
    for dir in [&man_dir, &comp_dir] {
        if dir.exists() {
            // Stale pages of removed subcommands must not end up in the package.
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    for (bin, cmd) in commands() {
        // One page per (sub)command: jobctl.1, jobctl-upload.1, ...
        clap_mangen::generate_to(cmd.clone(), &man_dir)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let Some(rel) = completion_path(shell, bin) else {
                continue;
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), bin, &mut script);
            let path = comp_dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, script)?;
            written.push(path);
        }
    }
    for entry in std::fs::read_dir(&man_dir)? {
        written.push(entry?.path());
    }
    written.sort();
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: jobd-gen OUT_DIR  (writes OUT_DIR/man and OUT_DIR/completions)");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "jobd-gen: cannot write to {}: {e}",
                Path::new(&out).display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pages_and_completions_for_every_binary() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let files = generate(dir.path()).expect("generate");
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .expect("under OUT_DIR")
                    .display()
                    .to_string()
            })
            .collect();
        for want in [
            "man/jobd.1",
            "man/jobctl.1",
            "man/jobctl-upload.1",
            "man/jobctl-completions.1",
            "man/jobd-http.1",
            "completions/bash/jobctl",
            "completions/zsh/_jobctl",
            "completions/fish/jobctl.fish",
            "completions/bash/jobd",
            "completions/fish/jobd-http.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let page = std::fs::read_to_string(dir.path().join("man/jobd.1")).expect("jobd.1");
        assert!(page.contains(".TH jobd 1"), "{page}");
        assert!(page.contains("check\\-config"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/jobctl"))
            .expect("bash completion");
        assert!(bash.contains("bulk-team"), "{bash}");
        // Generating again replaces, never accumulates.
        assert_eq!(generate(dir.path()).expect("again").len(), files.len());
    }
}

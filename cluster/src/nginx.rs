//! The gateway under the local launcher: finding the system's nginx, writing its prefix
//! directory (config rendered by the `gateway` crate, logs, temporary files) and the command
//! line that runs it in the foreground.

use anyhow::{anyhow, Context};
use gateway::{BalancerOptions, LOCAL_DIRS, LOCAL_ERROR_LOG};
use model::topology::Topology;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where Debian and Ubuntu install nginx; `/usr/sbin` is often not on an ordinary user's PATH.
pub const FALLBACK_PATHS: [&str; 1] = ["/usr/sbin/nginx"];

/// What to tell a person whose machine has no nginx.
pub const NOT_FOUND: &str = "nginx not found: install it with 'sudo apt-get install nginx' (Debian/Ubuntu)";

/// The nginx binary: the first `nginx` on PATH, else one of [`FALLBACK_PATHS`].
pub fn find() -> anyhow::Result<PathBuf> {
    find_in(std::env::var_os("PATH"), &FALLBACK_PATHS)
}

fn find_in(path_var: Option<OsString>, fallbacks: &[&str]) -> anyhow::Result<PathBuf> {
    let on_path: Vec<PathBuf> =
        path_var.map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect()).unwrap_or_default();
    on_path
        .into_iter()
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| is_executable(p))
        .ok_or_else(|| anyhow!(NOT_FOUND))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A prepared prefix directory.
#[derive(Clone, Debug)]
pub struct Prefix {
    /// The prefix (absolute): `nginx -p`.
    pub dir: PathBuf,
    /// The config file in it.
    pub conf: PathBuf,
}

impl Prefix {
    /// Creates `dir` with the directories the config needs and writes the config rendered
    /// for `topology`. `dir` must be absolute: nginx resolves the config's paths against it.
    pub fn write(dir: &Path, topology: &Topology) -> anyhow::Result<Prefix> {
        if !dir.is_absolute() {
            return Err(anyhow!("nginx prefix {} is not absolute", dir.display()));
        }
        for d in LOCAL_DIRS {
            std::fs::create_dir_all(dir.join(d)).with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let conf = dir.join("nginx.conf");
        let text = gateway::render(topology, &BalancerOptions::local(topology));
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        Ok(Prefix { dir: dir.to_path_buf(), conf })
    }

    /// The arguments that run nginx in the foreground on this prefix (`-g 'daemon off;'`:
    /// the launcher supervises the process itself).
    pub fn args(&self) -> Vec<OsString> {
        // nginx takes the prefix as given and appends relative paths to it, so it must end
        // in a slash.
        let mut dir = self.dir.clone().into_os_string();
        dir.push("/");
        vec!["-p".into(), dir, "-c".into(), self.conf.clone().into(), "-g".into(), "daemon off;".into()]
    }

    /// The arguments that only check the config (`nginx -t`).
    pub fn test_args(&self) -> Vec<OsString> {
        let mut a = self.args();
        a.insert(0, "-t".into());
        a
    }

    /// nginx's own error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join(LOCAL_ERROR_LOG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_prefix_and_builds_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topology::local(1, 2, &mut (20000..));
        let p = Prefix::write(&dir.path().join("nginx"), &t).unwrap();
        assert!(p.dir.join("logs").is_dir() && p.dir.join("temp").is_dir());
        let conf = std::fs::read_to_string(&p.conf).unwrap();
        assert!(conf.contains("listen 127.0.0.1:20000 backlog=4096;"));
        let args: Vec<String> = p.args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[0], "-p");
        assert!(args[1].ends_with("/nginx/"));
        assert_eq!(&args[2..], ["-c", p.conf.to_string_lossy().as_ref(), "-g", "daemon off;"].map(String::from));
        assert_eq!(p.test_args()[0], "-t");
        assert!(Prefix::write(Path::new("relative"), &t).is_err());
    }

    #[test]
    fn finds_nginx_on_path_or_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_in(Some(dir.path().into()), &[]).unwrap_err().to_string();
        assert_eq!(err, "nginx not found: install it with 'sudo apt-get install nginx' (Debian/Ubuntu)");
        // Not executable: not found either.
        let fake = dir.path().join("nginx");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        assert!(find_in(Some(dir.path().into()), &[]).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in(Some(dir.path().into()), &[]).unwrap(), fake);
        let fallback = fake.to_string_lossy().into_owned();
        assert_eq!(find_in(None, &[fallback.as_str()]).unwrap(), fake);
    }
}

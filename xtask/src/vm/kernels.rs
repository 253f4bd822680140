//! Kernels for the VM: Debian's cloud kernel of each series, resolved through apt under a
//! private configuration (its own sources, lists and cache; the host's apt state is never
//! touched), unpacked with `dpkg-deb -x`, cached in target/vm-cache.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::Series;
use crate::util::{exec, output};

pub(super) const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub(super) const MIRROR: &str = "http://deb.debian.org/debian";

pub(super) const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

pub(super) const META_PACKAGE: &str = "linux-image-cloud-amd64";

// ---------------------------------------------------------------------------------------
// Kernels

/// A kernel image ready to boot.
#[derive(Clone, Debug)]
pub(super) struct Kernel {
    pub(super) series: Series,
    pub(super) package: String,
    pub(super) version: String,
    pub(super) vmlinuz: PathBuf,
}

/// The series' kernel: from the cache, or resolved and downloaded through apt.
pub(super) fn kernel(series: Series, cache: &Path, refresh: bool) -> Result<Kernel> {
    let dir = cache.join(series.name());
    let cached = read_record(series, &dir);
    if let (Some(k), false) = (&cached, refresh) {
        return Ok(k.clone());
    }
    match fetch_kernel(series, &dir, cached.as_ref()) {
        Ok(k) => Ok(k),
        Err(e) => match cached {
            Some(k) => {
                eprintln!(
                    "vm-test: [{series}] cannot refresh the kernel ({e:#}); using the cached {}",
                    k.package
                );
                Ok(k)
            }
            None => Err(e),
        },
    }
}

/// The cached kernel record (kernel.json next to the image), if complete.
pub(super) fn read_record(series: Series, dir: &Path) -> Option<Kernel> {
    let v: Value = serde_json::from_str(&fs::read_to_string(dir.join("kernel.json")).ok()?).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let vmlinuz = dir.join(field("vmlinuz")?);
    vmlinuz.is_file().then_some(Kernel {
        series,
        package: field("package")?,
        version: field("version")?,
        vmlinuz,
    })
}

pub(super) fn write_record(dir: &Path, k: &Kernel) -> Result<()> {
    let file = k
        .vmlinuz
        .file_name()
        .and_then(|f| f.to_str())
        .context("kernel image name")?;
    let v = serde_json::json!({ "package": k.package, "version": k.version, "vmlinuz": file });
    fs::write(dir.join("kernel.json"), format!("{v:#}\n")).context("writing kernel.json")
}

/// Resolves the current versioned package and downloads it unless it is the cached one.
pub(super) fn fetch_kernel(series: Series, dir: &Path, cached: Option<&Kernel>) -> Result<Kernel> {
    let apt = Apt::new(series, &dir.join("apt"))?;
    eprintln!(
        "vm-test: [{series}] asking apt for {META_PACKAGE} in {}",
        series.release()
    );
    apt.update()?;
    let package = parse_depends(&apt.output(&["apt-cache", "depends", META_PACKAGE])?)
        .with_context(|| {
            format!(
                "{META_PACKAGE} in {} depends on no versioned kernel",
                series.release()
            )
        })?;
    let version =
        parse_version(&apt.output(&["apt-cache", "show", "--no-all-versions", &package])?)
            .with_context(|| format!("apt-cache show {package} printed no Version"))?;
    if let Some(k) = cached.filter(|k| k.package == package && k.version == version) {
        return Ok(Kernel {
            series,
            package,
            version,
            vmlinuz: k.vmlinuz.clone(),
        });
    }
    eprintln!("vm-test: [{series}] downloading {package} {version}");
    let vmlinuz = download_image(&apt, &package, dir)?;
    if let Some(old) = cached.filter(|k| k.vmlinuz != vmlinuz) {
        let _ = fs::remove_file(&old.vmlinuz);
    }
    let k = Kernel {
        series,
        package,
        version,
        vmlinuz,
    };
    write_record(dir, &k)?;
    Ok(k)
}

/// `apt-get download`s the package, unpacks it and keeps boot/vmlinuz-* (and its config).
pub(super) fn download_image(apt: &Apt, package: &str, dir: &Path) -> Result<PathBuf> {
    let work = dir.join("download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    apt.exec_in(&work, &["apt-get", "download", "-q", package])?;
    let deb =
        find_file(&work, |n| n.ends_with(".deb"))?.context("apt-get download left no .deb")?;
    let unpacked = work.join("root");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let image = find_file(&boot, |n| n.starts_with("vmlinuz-"))?
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    let name = image.file_name().context("image name")?.to_owned();
    let dest = dir.join(&name);
    fs::copy(&image, &dest).with_context(|| format!("copying {}", image.display()))?;
    if let Some(config) = find_file(&boot, |n| n.starts_with("config-"))? {
        let _ = fs::copy(
            &config,
            dir.join(config.file_name().context("config name")?),
        );
    }
    let _ = fs::remove_dir_all(&work);
    Ok(dest)
}

pub(super) fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_str().is_some_and(&pred))
        .map(|e| e.path()))
}

/// The versioned kernel package in `apt-cache depends <meta>` output.
pub(super) fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-") && *p != META_PACKAGE)
        .map(str::to_string)
}

/// The Version field of `apt-cache show --no-all-versions` output.
pub(super) fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
}

/// apt-get and apt-cache with a private configuration (APT_CONFIG): own sources for the
/// series' release, lists, cache and an empty dpkg status. The host's apt.conf.d, sources
/// and preferences are not read, and nothing under /etc/apt or /var/lib/apt is written.
pub(super) struct Apt {
    pub(super) config: PathBuf,
}

impl Apt {
    pub(super) fn new(series: Series, dir: &Path) -> Result<Apt> {
        for d in [
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        fs::write(dir.join("etc/sources.list"), sources(series.release()))?;
        let status = dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let config = dir.join("apt.conf");
        fs::write(&config, apt_conf(dir))?;
        Ok(Apt { config })
    }

    pub(super) fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    pub(super) fn update(&self) -> Result<()> {
        exec(
            self.command(&["apt-get", "update", "-q"])
                .stdout(Stdio::null()),
        )
    }

    pub(super) fn output(&self, argv: &[&str]) -> Result<String> {
        output(&mut self.command(argv))
    }

    pub(super) fn exec_in(&self, dir: &Path, argv: &[&str]) -> Result<()> {
        exec(self.command(argv).current_dir(dir))
    }
}

pub(super) fn sources(release: &str) -> String {
    let opts = format!("[arch=amd64 signed-by={KEYRING}]");
    format!(
        "deb {opts} {MIRROR} {release} main\n\
         deb {opts} {MIRROR} {release}-updates main\n\
         deb {opts} {SECURITY_MIRROR} {release}-security main\n"
    )
}

pub(super) fn apt_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "// Private apt configuration of `cargo xtask vm-test`.\n\
         Dir::Etc \"{d}/etc\";\n\
         Dir::Etc::main \"/dev/null\";\n\
         Dir::Etc::parts \"apt.conf.d\";\n\
         Dir::Etc::sourcelist \"sources.list\";\n\
         Dir::Etc::sourceparts \"sources.list.d\";\n\
         Dir::Etc::preferences \"preferences\";\n\
         Dir::Etc::preferencesparts \"preferences.d\";\n\
         Dir::State \"{d}/state\";\n\
         Dir::State::status \"{d}/state/status\";\n\
         Dir::Cache \"{d}/cache\";\n\
         Dir::Cache::pkgcache \"\";\n\
         Dir::Cache::srcpkgcache \"\";\n\
         APT::Architectures {{ \"amd64\"; }};\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Languages \"none\";\n\
         Acquire::GzipIndexes \"true\";\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_versioned_package() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.12.117+deb13-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.12.117+deb13-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: <linux-image-6.1.0-41-cloud-amd64>\n";
        assert_eq!(
            parse_depends(alt).as_deref(),
            Some("linux-image-6.1.0-41-cloud-amd64")
        );
        assert_eq!(
            parse_depends("linux-image-cloud-amd64\n  Depends: kmod\n"),
            None
        );
        assert_eq!(parse_depends(""), None);
        assert_eq!(
            parse_version("Package: x\nVersion: 6.1.158-1\n").as_deref(),
            Some("6.1.158-1")
        );
        assert_eq!(parse_version("Package: x\n"), None);
    }
}

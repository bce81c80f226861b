//! Test certificates made with the `openssl` command-line tool (Debian's `openssl`, which
//! PostgreSQL's packages depend on): a CA, and server or client certificates it signs, all
//! ECDSA P-256 with SHA-256, as PEM files in a folder. Keys are mode 0600.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, unencrypted PKCS#8, mode 0600).
    pub key: PathBuf,
}

/// A certificate authority in a folder.
#[derive(Debug, Clone)]
pub struct Ca {
    dir: PathBuf,
    /// The CA's own certificate and key.
    pub files: CertFiles,
}

fn openssl(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (Debian: apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn key_0600(key: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

impl Ca {
    /// A new CA named `name` (files `<name>.crt` / `<name>.key` in `dir`).
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        std::fs::create_dir_all(dir)?;
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3",
                "-subj",
                &format!("/CN=tidemark test CA {name}"),
                "-keyout",
                &key,
                "-out",
                &crt,
            ],
            dir,
        )?;
        key_0600(&dir.join(&key))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            files: CertFiles {
                cert: dir.join(crt),
                key: dir.join(key),
            },
        })
    }

    /// A server certificate for `sans` (`DNS:localhost`, `IP:127.0.0.1`, ...).
    pub fn server(&self, name: &str, cn: &str, sans: &[&str]) -> anyhow::Result<CertFiles> {
        self.issue(
            name,
            cn,
            &format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
    }

    /// A client certificate whose common name is `cn` (PostgreSQL's `cert` method takes it
    /// as the user name).
    pub fn client(&self, name: &str, cn: &str) -> anyhow::Result<CertFiles> {
        self.issue(
            name,
            cn,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
    }

    fn issue(&self, name: &str, cn: &str, ext: &str) -> anyhow::Result<CertFiles> {
        let (crt, key, csr, extf) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(self.dir.join(&extf), ext)?;
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
            &self.dir,
        )?;
        key_0600(&self.dir.join(&key))?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.files.cert.to_string_lossy(),
                "-CAkey",
                &self.files.key.to_string_lossy(),
                "-CAcreateserial",
                "-days",
                "3",
                "-sha256",
                "-extfile",
                &extf,
                "-out",
                &crt,
            ],
            &self.dir,
        )?;
        Ok(CertFiles {
            cert: self.dir.join(crt),
            key: self.dir.join(key),
        })
    }
}

//! The test certificates: a CA and a server certificate it signs, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{need, run};

/// A test CA and a server certificate for `localhost` and 127.0.0.1 signed by it; and, as
/// internal relays often have, a self-signed certificate for `localhost` only that is also
/// marked as a CA (`CA:TRUE`).
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub self_signed_ca: PathBuf,
    pub self_signed_key: PathBuf,
}

impl Certs {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let openssl = need("openssl", "apt-get install -y openssl")?;
        let p = |n: &str| dir.join(n);
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=flowmail test CA",
                "-keyout",
            ])
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")))?;
        run(Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")))?;
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )?;
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.pem")))?;
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=relay.internal",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-keyout",
            ])
            .arg(p("relay.key"))
            .arg("-out")
            .arg(p("relay.pem")))?;
        Ok(Self {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            self_signed_ca: p("relay.pem"),
            self_signed_key: p("relay.key"),
        })
    }
}
